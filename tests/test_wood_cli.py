"""W-OoD end to end through the CLI on the tiny benchmark: mine -> review --oracle -> train classifier --ood ->
the checkpoint is an ordinary classifier that `weakseg pseudo --method cam` uses."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from cli.main import main
from weakseg import engine
from training.wood import CENTRES_NAME
from weakseg.models.classifier_io import load_classifier
from weakseg.ood.pool import read_truth


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def assert_centres_by_hand(centres: dict, init_run, data, ood_files: list[str]) -> None:
    """Epoch-0 centres recomputed from the initial network: p_c = mean GAP feature of the whole train images tagged
    c (Eq. 4.1's class centres); the K = min(50, #OoD) OoD centres are a K-means fixed point of the OoD features."""
    from PIL import Image

    from weakseg.data.voc import VOCDataset

    model = load_classifier(init_run)[0].eval()
    as_tensor = lambda a: torch.from_numpy(np.asarray(a, np.uint8).copy()).permute(2, 0, 1).float() / 255.0  # noqa: E731
    gap = lambda x: model.features(x[None]).mean(dim=(2, 3))[0]  # noqa: E731
    ds = VOCDataset(data, "train")
    with torch.no_grad():
        z = {i: gap(as_tensor(ds.image(i))) for i in ds.ids}
        z_ood = torch.stack([gap(as_tensor(Image.open(p).convert("RGB"))) for p in ood_files])
    want = torch.stack([torch.stack([z[i] for i in ds.ids if c in ds.label_ids(i)]).mean(0)
                        for c in range(1, len(ds.classes) + 1)])
    torch.testing.assert_close(centres["in_centres"].float(), want, atol=1e-4, rtol=1e-4)
    ood = centres["ood_centres"].float()
    assert ood.shape == (min(50, len(ood_files)), want.shape[1])
    nearest = torch.cdist(z_ood, ood).argmin(1)
    for k in nearest.unique():
        torch.testing.assert_close(ood[k], z_ood[nearest == k].mean(0), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_mine_review_train_and_pseudo(tiny_synth, tiny_classifier, tmp_path, capsys, monkeypatch):
    torch.set_num_threads(2)
    mine = tmp_path / "mine"
    assert main(["ood", "mine", "--model", str(tiny_classifier), "--pool", str(tiny_synth / "OoD"), "--out", str(mine),
                 "--threshold", "0", "--device", "cpu"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["pool_images"] == summary["candidates"] == 8

    strict = tmp_path / "mine_strict"
    assert main(["ood", "mine", "--model", str(tiny_classifier), "--pool", str(tiny_synth / "OoD"), "--out", str(strict),
                 "--threshold", "0.6", "--device", "cpu"]) == 0
    capsys.readouterr()
    with (strict / "scores.csv").open() as f:
        above = {r["image"] for r in csv.DictReader(f) if max(float(v) for k, v in r.items() if k != "image") >= 0.6}
    with (strict / "candidates.csv").open() as f:
        assert {r["image"] for r in csv.DictReader(f)} == above

    assert main(["ood", "review", "--candidates", str(mine), "--oracle"]) == 0
    review = _last_json(capsys.readouterr().out)
    truth = read_truth(tiny_synth / "OoD" / "truth.csv")
    assert review["decided"] == 8 and review["kept"] == sum(not v for v in truth.values())
    assert review["label_seconds"] == 8 * 20.0

    run = tmp_path / "wood"
    train = ["train", "classifier", "--data", str(tiny_synth), "--out", str(run), "--init", str(tiny_classifier),
             "--ood", str(mine), "--epochs", "2", "--batch-size", "8", "--ood-batch-size", "4", "--crop", "64",
             "--lr", "1e-4", "--val-split", "", "--device", "cpu", "--quiet"]
    assert main(train) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["epochs"] == 2 and result["cls_ood"] > 0 and "l_d" in result and "ood_fp" in result
    record = json.loads((run / "run.json").read_text())
    assert record["wood"]["loss"]["lam"] == 0.007 and len(record["wood"]["ood_images"]) == review["kept"]
    # the default is the authors' code: means, OoD weight 0.25, one anti-adversarial step, centres once
    assert record["wood"]["loss"]["reduction"] == "mean" and record["wood"]["loss"]["ood_weight"] == 0.25
    assert record["wood"]["adv_steps"] == 1 and record["wood"]["centre_every"] == 0
    centres = torch.load(run / CENTRES_NAME, weights_only=True)
    assert centres["epoch"] == 0
    assert_centres_by_hand(centres, tiny_classifier, tiny_synth, record["wood"]["ood_images"])
    model, classes = load_classifier(run)
    assert classes == load_classifier(tiny_classifier)[1]
    assert main(train) == 0 and _last_json(capsys.readouterr().out)["resumed_from_epoch"] == 2  # finished: nothing to redo

    # interrupted after epoch 1 and resumed, the run ends with the straight run's weights (centres from the run folder)
    split = tmp_path / "wood_resumed"
    again = [a if a != str(run) else str(split) for a in train]
    real_write = engine.atomic_write_json

    def interrupt_after_epoch_1(path, obj):
        real_write(path, obj)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "atomic_write_json", interrupt_after_epoch_1)
    assert main(again) == 130
    monkeypatch.setattr(engine, "atomic_write_json", real_write)
    assert torch.load(split / CENTRES_NAME, weights_only=True)["epoch"] == 0
    assert main(again) == 0 and _last_json(capsys.readouterr().out)["resumed_from_epoch"] == 1
    resumed = load_classifier(split)[0].state_dict()
    assert all(torch.equal(v, resumed[k]) for k, v in model.state_dict().items())

    out = tmp_path / "cam"
    assert main(["pseudo", "--method", "cam", "--model", str(run), "--data", str(tiny_synth), "--split", "train",
                 "--out", str(out), "--limit", "3", "--scales", "1.0", "--quiet", "--device", "cpu", "--workers", "0"]) == 0
    assert _last_json(capsys.readouterr().out)["succeeded"] == 3


@pytest.mark.slow
def test_text_variant_with_unit_features(tiny_synth, tiny_classifier, tmp_path, capsys):
    """--wood-variant text recomputes the centres every epoch; --wood-features unit makes them means of unit
    features (norm <= 1); the record says both."""
    mine = tmp_path / "mine"
    assert main(["ood", "mine", "--model", str(tiny_classifier), "--pool", str(tiny_synth / "OoD"), "--out", str(mine),
                 "--threshold", "0", "--device", "cpu"]) == 0
    assert main(["ood", "review", "--candidates", str(mine), "--accept-all"]) == 0
    run = tmp_path / "wood_unit"
    assert main(["train", "classifier", "--data", str(tiny_synth), "--out", str(run), "--init", str(tiny_classifier),
                 "--ood", str(mine), "--epochs", "2", "--batch-size", "8", "--ood-batch-size", "4", "--crop", "64",
                 "--val-split", "", "--device", "cpu", "--quiet", "--wood-variant", "text", "--wood-features", "unit"]) == 0
    capsys.readouterr()
    centres = torch.load(run / CENTRES_NAME, weights_only=True)
    assert centres["epoch"] == 1  # recomputed at the start of epoch 2
    for key in ("in_centres", "ood_centres"):
        norms = centres[key].norm(dim=1)
        assert (norms <= 1 + 1e-6).all() and (norms > 0).any()
    record = json.loads((run / "run.json").read_text())["wood"]
    assert record["loss"]["features"] == "unit" and record["loss"]["reduction"] == "sum" and record["centre_every"] == 1


def test_wood_input_errors_are_one_line(tiny_synth, tiny_classifier, tmp_path, capsys):
    assert main(["train", "classifier", "--data", str(tiny_synth), "--out", str(tmp_path / "r"), "--ood", str(tmp_path),
                 "--epochs", "1", "--device", "cpu"]) == 2
    assert "--init" in capsys.readouterr().err
    assert main(["ood", "review", "--candidates", str(tmp_path), "--oracle"]) == 2
    assert "mine.json" in capsys.readouterr().err
    assert main(["ood", "mine", "--model", str(tiny_classifier), "--pool", str(tmp_path / "none"), "--out",
                 str(tmp_path / "m"), "--device", "cpu"]) == 2
    assert "OoD pool folder not found" in capsys.readouterr().err
