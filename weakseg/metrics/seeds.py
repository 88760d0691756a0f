"""Seed (CAM) evaluation over a background-threshold sweep, as in SEAM/IRN/AdvCAM, and evaluation of label PNGs.

At threshold t an image's seed is argmax over [t, maps...] mapped to (0, class_ids...), which equals
where(max(maps) > t, class_ids[argmax(maps)], 0): ties go to background. Thresholds are compared in the
maps' dtype, as when t is padded into the maps array. One confusion matrix per threshold is accumulated
in a single pass over images with one bincount per image: a pixel is foreground exactly for the
thresholds below its max score, so counting pixels by (number of such thresholds, gt, class) and taking
cumulative sums gives every threshold's matrix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weakseg.data.classes import IGNORE_INDEX
from weakseg.errors import DataError
from weakseg.io import json_float, read_label_png
from weakseg.metrics.confusion import (
    ConfusionAccumulator,
    iou_per_class,
    miou,
    pixel_accuracy,
    precision_recall_f1,
)
from weakseg.refine.seed_label import check_maps, threshold_seed

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))  # 0.00 .. 0.95
AVERAGING_NOTE = "precision/recall/F1 are per-class values averaged over foreground classes"


def _class_names(class_names: Sequence[str]) -> list[str]:
    """Names for label values 0..C: 'background' then the foreground names."""
    return ["background", *class_names]


def _sorted_thresholds(thresholds: Sequence[float] | None) -> np.ndarray:
    """The sweep as a sorted, duplicate-free float64 array."""
    t = np.asarray(DEFAULT_THRESHOLDS if thresholds is None else thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0 or np.isnan(t).any():
        raise ValueError("thresholds must be a non-empty sequence of numbers")
    return np.unique(t)


@dataclass
class SeedReport:
    """Seed quality at the best background threshold, plus the whole mIoU-vs-threshold curve."""

    threshold: float
    miou: float
    per_class: dict[str, float]
    precision: float
    recall: float
    f1: float
    curve: list[tuple[float, float]]
    confusion: np.ndarray = field(repr=False)  # int64[n,n] at the best threshold

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (nan -> null): miou, threshold, precision, recall, f1, per_class, averaging, curve."""
        return {
            "miou": json_float(self.miou),
            "threshold": float(self.threshold),
            "precision": json_float(self.precision),
            "recall": json_float(self.recall),
            "f1": json_float(self.f1),
            "per_class": {k: json_float(v) for k, v in self.per_class.items()},
            "averaging": AVERAGING_NOTE,
            "curve": [[float(t), json_float(m)] for t, m in self.curve],
        }


def _report(cms: np.ndarray, thresholds: np.ndarray, names: list[str]) -> SeedReport:
    """Pick the max-mIoU threshold (lowest on ties) from per-threshold matrices and summarise it."""
    mious = np.array([miou(cm) for cm in cms])
    if np.isnan(mious).all():
        raise ValueError("no labelled ground-truth pixels to evaluate seeds on")
    best = int(np.nanargmax(mious))
    cm = cms[best]
    prf = precision_recall_f1(cm)
    return SeedReport(
        threshold=float(thresholds[best]),
        miou=float(mious[best]),
        per_class={name: float(v) for name, v in zip(names, iou_per_class(cm), strict=True)},
        precision=prf.mean_precision,
        recall=prf.mean_recall,
        f1=prf.mean_f1,
        curve=[(float(t), float(m)) for t, m in zip(thresholds, mious, strict=True)],
        confusion=cm,
    )


def _check_gt(gt: np.ndarray, hw: tuple[int, ...], index: int) -> np.ndarray:
    """Validate a ground-truth mask against the maps' HxW."""
    gt = np.asarray(gt)
    if gt.shape != tuple(hw):
        raise ValueError(f"image {index}: ground truth is {gt.shape} but maps are {tuple(hw)}")
    return gt


class SeedSweep:
    """Accumulates one confusion matrix per background threshold over images (single pass, vectorised)."""

    def __init__(self, num_classes: int, thresholds: Sequence[float] | None = None) -> None:
        """Start an empty sweep over `thresholds` (default 0.00..0.95 step 0.05) for label values 0..num_classes-1."""
        self.n = int(num_classes)
        self.thresholds = _sorted_thresholds(thresholds)
        self.counts = np.zeros((self.thresholds.size + 1, self.n, self.n), dtype=np.int64)  # [k, gt, class]
        self.images = 0

    def add(self, maps: np.ndarray, class_ids: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: maps [K,H,W] in [0,1], class_ids [K] (1-based), gt uint8 HxW (255 ignored)."""
        maps, class_ids = check_maps(maps, class_ids)
        gt = _check_gt(gt, maps.shape[1:], self.images)
        n, t = self.n, self.thresholds
        if class_ids.size and class_ids.max() >= n:
            raise ValueError(f"image {self.images}: class id {class_ids.max()} >= num_classes {n}")
        valid = gt != IGNORE_INDEX
        g = gt[valid].astype(np.int64)
        if g.size and g.max() >= n:
            raise ValueError(f"image {self.images}: ground truth holds value {g.max()}, outside 0..{n - 1}")
        if class_ids.size:
            if not np.issubdtype(maps.dtype, np.floating):
                maps = maps.astype(np.float32)
            mx = maps.max(0)[valid]
            cls = class_ids[maps.argmax(0)[valid]]
            k = np.searchsorted(t.astype(mx.dtype), mx, side="left")  # thresholds strictly below max
        else:
            cls = k = np.zeros_like(g)
        self.counts += np.bincount((k * n + g) * n + cls, minlength=self.counts.size).reshape(self.counts.shape)
        self.images += 1

    def matrices(self) -> np.ndarray:
        """int64[T,n,n]: the confusion matrix at each (sorted) threshold."""
        above = np.cumsum(self.counts[::-1], axis=0)[::-1]  # above[j] = sum_{k>=j} counts[k]
        cms = above[1:].copy()  # foreground predictions at threshold j: pixels with k > j
        below = np.cumsum(self.counts.sum(axis=2), axis=0)  # [k, gt]: pixels with k' <= k
        cms[:, :, 0] += below[:-1]  # those are background at threshold j
        return cms


def evaluate_seeds(
    items: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    thresholds: Sequence[float] | None = None,
) -> SeedReport:
    """Sweep background thresholds over (maps, class_ids, gt) items; report the best-mIoU threshold.

    `class_names` are the foreground names (label values 1..C), as `load_classes` returns them.
    """
    sweep = SeedSweep(len(class_names) + 1, thresholds)
    for maps, class_ids, gt in items:
        sweep.add(maps, class_ids, gt)
    return _report(sweep.matrices(), sweep.thresholds, _class_names(class_names))


def evaluate_seeds_refined(
    items: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    refine: Callable[[np.ndarray, np.ndarray], np.ndarray],
    thresholds: Sequence[float] | None = None,
) -> SeedReport:
    """Slow path: evaluate_seeds over (image, maps, class_ids, gt), applying refine(image, seed) at each threshold.

    `refine` is e.g. `lambda im, lb: crf_refine_label(im, lb, CRFConfig())`; keep the sweep short.
    Refined labels may hold 255, which is excluded from the matrices.
    """
    n = len(class_names) + 1
    t = _sorted_thresholds(thresholds)
    accs = [ConfusionAccumulator(n) for _ in t]
    for index, (image, maps, class_ids, gt) in enumerate(items):
        maps, class_ids = check_maps(maps, class_ids)
        gt = _check_gt(gt, maps.shape[1:], index)
        for acc, thr in zip(accs, t, strict=True):
            acc.add(gt, refine(image, threshold_seed(maps, class_ids, float(thr))))
    return _report(np.stack([a.matrix for a in accs]), t, _class_names(class_names))


@dataclass
class LabelReport:
    """Quality of finished label PNGs over their labelled pixels, and how much they leave unlabelled."""

    miou: float
    per_class: dict[str, float]
    precision: float
    recall: float
    f1: float
    pixel_accuracy: float
    ignored_fraction: float  # fraction of gt-valid pixels the labels left as 255
    num_images: int
    confusion: np.ndarray = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (nan -> null) of every field but the confusion matrix."""
        return {
            "miou": json_float(self.miou),
            "precision": json_float(self.precision),
            "recall": json_float(self.recall),
            "f1": json_float(self.f1),
            "per_class": {k: json_float(v) for k, v in self.per_class.items()},
            "averaging": AVERAGING_NOTE,
            "pixel_accuracy": json_float(self.pixel_accuracy),
            "ignored_fraction": json_float(self.ignored_fraction),
            "num_images": self.num_images,
        }


LabelSource = np.ndarray | str | os.PathLike


def _load(x: LabelSource) -> tuple[np.ndarray, str | None]:
    """An array as is, or a label PNG read from a path (with its name for errors)."""
    if isinstance(x, (str, os.PathLike)):
        return read_label_png(x), os.fspath(x)
    return np.asarray(x), None


def evaluate_labels(pairs: Iterable[tuple[LabelSource, LabelSource]], class_names: Sequence[str]) -> LabelReport:
    """Score (gt, label) pairs (arrays or PNG paths): mIoU over labelled pixels (255 excluded) and ignored_fraction."""
    n = len(class_names) + 1
    acc = ConfusionAccumulator(n, ignore_pred=True)
    valid_total = ignored = images = 0
    for gt_src, pred_src in pairs:
        gt, gt_name = _load(gt_src)
        pred, pred_name = _load(pred_src)
        try:
            acc.add(gt, pred)
        except ValueError as e:
            where = " vs ".join(x for x in (pred_name, gt_name) if x) or f"pair {images}"
            raise (DataError if (gt_name or pred_name) else ValueError)(f"{where}: {e}") from e
        valid = gt != IGNORE_INDEX
        valid_total += int(valid.sum())
        ignored += int((valid & (pred == IGNORE_INDEX)).sum())
        images += 1
    cm = acc.matrix
    prf = precision_recall_f1(cm)
    return LabelReport(
        miou=miou(cm),
        per_class={name: float(v) for name, v in zip(_class_names(class_names), iou_per_class(cm), strict=True)},
        precision=prf.mean_precision,
        recall=prf.mean_recall,
        f1=prf.mean_f1,
        pixel_accuracy=pixel_accuracy(cm),
        ignored_fraction=ignored / valid_total if valid_total else float("nan"),
        num_images=images,
        confusion=cm,
    )
