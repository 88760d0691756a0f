"""Hard-OoD mining: scores of every pool image, the threshold, per-class ranking, and the output files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from tests.wood_helpers import make_pool
from weakseg.errors import DataError, WeaksegError
from weakseg.ood.mining import rank_candidates, read_mining, read_scores, score_pool, write_mining
from weakseg.ood.pool import open_pool, read_truth


class BrightnessModel(nn.Module):
    """Two classes: logit(brightness) and logit(1 - brightness) of the whole image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.mean(dim=(1, 2, 3)).clamp(1e-4, 1 - 1e-4)
        return torch.stack([torch.logit(v), torch.logit(1 - v)], dim=1)


def test_mining_respects_the_threshold_and_ranks_per_class(tmp_path):
    pool = open_pool(make_pool(tmp_path, 11))
    scores = score_pool(BrightnessModel(), pool, torch.device("cpu"), batch=4)
    assert scores.shape == (11, 2)
    assert np.allclose(scores[:, 0], np.linspace(0, 1, 11), atol=0.02)  # JPEG rounding only
    for threshold in (0.5, 0.85):
        cands, per_class = rank_candidates(pool.ids, scores, ["bright", "dark"], threshold)
        assert all(c.score >= threshold for c in cands)
        assert {c.image for c in cands} == {i for i, row in zip(pool.ids, scores) if row.max() >= threshold}
        assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
        for k, name in enumerate(["bright", "dark"]):
            expected = {i for i, row in zip(pool.ids, scores) if row[k] >= threshold}
            assert {i for i, _ in per_class[name]} == expected
            assert [s for _, s in per_class[name]] == sorted((s for _, s in per_class[name]), reverse=True)
    assert len(rank_candidates(pool.ids, scores, ["bright", "dark"], 1.0)[0]) == 0
    with pytest.raises(WeaksegError):
        rank_candidates(pool.ids, scores, ["bright", "dark"], 1.5)


def test_mining_folder_files(tmp_path):
    pool = open_pool(make_pool(tmp_path, 7))
    scores = score_pool(BrightnessModel(), pool, torch.device("cpu"))
    summary = write_mining(tmp_path / "mine", pool, ["bright", "dark"], scores, 0.7, {"model": "m"})
    meta, cands = read_mining(tmp_path / "mine")
    assert meta == summary and meta["pool_images"] == 7 and meta["candidates"] == len(cands)
    assert meta["per_class"]["bright"] + meta["per_class"]["dark"] == len(cands)  # no image above 0.7 for both
    with (tmp_path / "mine" / "per_class" / "bright.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1)) and all(float(r["score"]) >= 0.7 for r in rows)
    ids, back, classes = read_scores(tmp_path / "mine")
    assert ids == pool.ids and classes == ["bright", "dark"] and np.allclose(back, scores, atol=1e-6)
    assert sum(read_truth(pool.truth_path).values()) == 3  # ids 0, 3, 6


def test_pool_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_pool(tmp_path / "missing")
    root = make_pool(tmp_path, 3)
    (root / "JPEGImages" / "ood_00001.jpg").unlink()
    with pytest.raises(DataError, match="ood_00001.jpg"):
        open_pool(root)
    with pytest.raises(DataError, match="mine.json"):
        read_mining(tmp_path)
