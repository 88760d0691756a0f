"""Confusion matrices and the segmentation scores derived from them (IoU, accuracy, precision/recall/F1).

Classes are label values 0..n-1 (0 = background); rows of a matrix are ground truth, columns predictions.
Ground-truth pixels equal to IGNORE_INDEX (255) never count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from weakseg.data.classes import IGNORE_INDEX


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_pred: bool = True) -> np.ndarray:
    """int64[n,n] counts (rows gt, cols pred); gt 255 skipped, pred 255 skipped (ignore_pred) or counted as background.

    `ignore_pred=True` is the convention for pseudo-label PNGs: pixels the label leaves as 255 are not
    scored (report how many with `ignored_fraction`). `ignore_pred=False` is the strict reading: a 255
    prediction counts as a background prediction. Any other value outside 0..n-1 raises ValueError.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != prediction shape {pred.shape}")
    n = int(num_classes)
    if n < 1 or n > IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX}, got {num_classes}")
    gt = gt.ravel().astype(np.int64, copy=False)
    pred = pred.ravel().astype(np.int64, copy=False)
    valid = gt != IGNORE_INDEX
    if ignore_pred:
        valid &= pred != IGNORE_INDEX
    else:
        pred = np.where(pred == IGNORE_INDEX, 0, pred)
    if not valid.all():
        gt, pred = gt[valid], pred[valid]
    if gt.size and (gt.min() < 0 or gt.max() >= n):
        bad = gt[(gt < 0) | (gt >= n)][0]
        raise ValueError(f"ground truth holds value {bad}, outside 0..{n - 1} and not {IGNORE_INDEX}")
    if pred.size and (pred.min() < 0 or pred.max() >= n):
        bad = pred[(pred < 0) | (pred >= n)][0]
        raise ValueError(f"prediction holds value {bad}, outside 0..{n - 1} and not {IGNORE_INDEX}")
    return np.bincount(gt * n + pred, minlength=n * n).reshape(n, n).astype(np.int64, copy=False)


@dataclass
class ConfusionAccumulator:
    """A running confusion matrix summed over images."""

    num_classes: int
    ignore_pred: bool = True
    matrix: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image's (gt, prediction) pair."""
        self.matrix += confusion_matrix(gt, pred, self.num_classes, self.ignore_pred)

    def merge(self, other: ConfusionAccumulator) -> ConfusionAccumulator:
        """Add another accumulator's counts into this one (e.g. from a worker) and return self."""
        if other.num_classes != self.num_classes or other.ignore_pred != self.ignore_pred:
            raise ValueError("cannot merge accumulators with different num_classes or ignore_pred")
        self.matrix += other.matrix
        return self


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den elementwise, nan where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-nan entries; nan (without a warning) if there are none."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP/(TP+FP+FN); nan for a class absent from both ground truth and prediction."""
    cm = np.asarray(cm)
    tp = np.diag(cm)
    return _safe_div(tp, cm.sum(0) + cm.sum(1) - tp)


def miou(cm: np.ndarray) -> float:
    """Mean IoU over classes present in ground truth or prediction (absent-from-both classes are excluded, not 0)."""
    return _nanmean(iou_per_class(cm))


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of counted pixels predicted correctly (nan if none counted)."""
    cm = np.asarray(cm)
    return float(_safe_div(np.trace(cm), cm.sum()))


@dataclass(frozen=True)
class PrecisionRecallF1:
    """Per-class precision/recall/F1 arrays and their means over foreground classes (1..n-1)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    mean_precision: float
    mean_recall: float
    mean_f1: float


def precision_recall_f1(cm: np.ndarray) -> PrecisionRecallF1:
    """Per-class precision TP/(TP+FP), recall TP/(TP+FN), F1; means over foreground classes only.

    A class absent from both ground truth and prediction gets nan (excluded from the means, as in `miou`);
    otherwise an undefined ratio (never predicted, or never in ground truth) counts as 0.
    """
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    pred_tot = cm.sum(0).astype(np.float64)
    gt_tot = cm.sum(1).astype(np.float64)
    seen = (pred_tot + gt_tot) > 0
    precision = np.where(seen, np.nan_to_num(_safe_div(tp, pred_tot)), np.nan)
    recall = np.where(seen, np.nan_to_num(_safe_div(tp, gt_tot)), np.nan)
    f1 = _safe_div(2 * tp, pred_tot + gt_tot)  # = 2PR/(P+R); nan exactly where unseen
    return PrecisionRecallF1(
        precision=precision,
        recall=recall,
        f1=f1,
        mean_precision=_nanmean(precision[1:]),
        mean_recall=_nanmean(recall[1:]),
        mean_f1=_nanmean(f1[1:]),
    )
