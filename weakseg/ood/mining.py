"""Hard-OoD mining (Sec. 4.3.1): score every pool image with the in-distribution classifier, keep those with
p(c) >= threshold for some class c, and rank them per class.

Output folder (every file written atomically):
  mine.json          what was mined: pool, model checksum, threshold, counts per class
  scores.csv         image, p(c) for every class, for every pool image
  candidates.csv     rank, image, class, score: every image with max_c p(c) >= threshold, best class, by score
  per_class/<c>.csv  rank, image, score: the images with p(c) >= threshold, by p(c)
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weakseg.data.augment import to_tensor
from weakseg.errors import DataError, WeaksegError
from weakseg.io import atomic_write_json, atomic_write_text
from weakseg.ood.pool import OodPool

MINE_NAME = "mine.json"
CANDIDATES_NAME = "candidates.csv"
SCORES_NAME = "scores.csv"


@dataclass(frozen=True)
class Candidate:
    """One image to review: its best class (max p(c)) and that score."""

    image: str
    cls: str
    score: float


def batched_forward(
    fn: Callable[[torch.Tensor], torch.Tensor], images: list[torch.Tensor], device: torch.device, batch: int = 16
) -> torch.Tensor:
    """fn over [3,H,W] tensors without gradients, batched where sizes agree (one at a time otherwise); on the CPU."""
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            chunk = images[i : i + batch]
            if len({tuple(t.shape) for t in chunk}) == 1:
                out.append(fn(torch.stack(chunk).to(device)).float().cpu())
            else:
                out.append(torch.cat([fn(t[None].to(device)) for t in chunk]).float().cpu())
    return torch.cat(out)


def score_images(model: nn.Module, images: list[np.ndarray], device: torch.device, batch: int = 16) -> np.ndarray:
    """Sigmoid class scores p(c) [N, C] of whole images (one scale)."""
    return batched_forward(lambda x: model(x).sigmoid(), [to_tensor(im) for im in images], device, batch).numpy()


def score_pool(model: nn.Module, pool: OodPool, device: torch.device, batch: int = 16) -> np.ndarray:
    """p(c) [N, C] for every pool image, in pool order."""
    scores = [
        score_images(model, [pool.image(i) for i in pool.ids[s : s + batch]], device, batch)
        for s in range(0, len(pool.ids), batch)
    ]
    return np.concatenate(scores)


def rank_candidates(
    ids: list[str], scores: np.ndarray, classes: list[str], threshold: float = 0.5
) -> tuple[list[Candidate], dict[str, list[tuple[str, float]]]]:
    """(every image with some p(c) >= threshold, best class first by score; per class the images with
    p(c) >= threshold by p(c)). Ties keep pool order."""
    if not 0.0 <= threshold <= 1.0:
        raise WeaksegError(f"mining threshold must be in [0, 1], got {threshold}")
    if scores.shape != (len(ids), len(classes)):
        raise WeaksegError(f"scores of shape {scores.shape} do not match {len(ids)} images x {len(classes)} classes")
    per_class: dict[str, list[tuple[str, float]]] = {}
    for c, name in enumerate(classes):
        keep = [(ids[i], float(scores[i, c])) for i in range(len(ids)) if scores[i, c] >= threshold]
        per_class[name] = sorted(keep, key=lambda t: -t[1])
    best = scores.argmax(1) if len(ids) else np.zeros(0, int)
    cands = [
        Candidate(ids[i], classes[int(best[i])], float(scores[i, best[i]]))
        for i in range(len(ids))
        if scores[i, best[i]] >= threshold
    ]
    return sorted(cands, key=lambda c: -c.score), per_class


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_mining(
    out: str | os.PathLike, pool: OodPool, classes: list[str], scores: np.ndarray, threshold: float, record: dict
) -> dict:
    """Write the mining folder (scores, candidates, per-class lists, mine.json last) and return mine.json's content."""
    out = Path(out)
    cands, per_class = rank_candidates(pool.ids, scores, classes, threshold)
    atomic_write_text(
        out / SCORES_NAME,
        _csv(["image", *classes], [[i, *(f"{v:.6f}" for v in row)] for i, row in zip(pool.ids, scores, strict=True)]),
    )
    for name, rows in per_class.items():
        atomic_write_text(
            out / "per_class" / f"{name}.csv",
            _csv(["rank", "image", "score"], [[r, i, f"{s:.6f}"] for r, (i, s) in enumerate(rows, 1)]),
        )
    atomic_write_text(
        out / CANDIDATES_NAME,
        _csv(
            ["rank", "image", "class", "score"], [[r, c.image, c.cls, f"{c.score:.6f}"] for r, c in enumerate(cands, 1)]
        ),
    )
    summary = {
        **record,
        "pool": str(pool.root),
        "images_dir": str(pool.images_dir),
        "threshold": threshold,
        "classes": classes,
        "pool_images": len(pool.ids),
        "candidates": len(cands),
        "per_class": {k: len(v) for k, v in per_class.items()},
    }
    atomic_write_json(out / MINE_NAME, summary)
    return summary


def read_mining(folder: str | os.PathLike) -> tuple[dict, list[Candidate]]:
    """(mine.json, the ranked candidates) of a mining folder."""
    folder = Path(folder)
    meta_path, cand_path = folder / MINE_NAME, folder / CANDIDATES_NAME
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not a mining folder (run `weakseg ood mine` first)")
    try:
        meta = json.loads(meta_path.read_text())
        with cand_path.open(newline="") as f:
            cands = [Candidate(r["image"], r["class"], float(r["score"])) for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise DataError(f"{folder}: unreadable mining output ({e})") from e
    return meta, cands


def read_scores(folder: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """(image ids, p(c) [N, C], class names) from a mining folder's scores.csv."""
    path = Path(folder) / SCORES_NAME
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        classes = rows[0][1:]
        return [r[0] for r in rows[1:]], np.asarray([[float(v) for v in r[1:]] for r in rows[1:]], np.float32), classes
    except (OSError, ValueError, IndexError) as e:
        raise DataError(f"{path}: unreadable scores file ({e})") from e
