"""Segmentation scores written out plainly (loops, no shared code with weakseg.metrics), to check the reports against."""

from __future__ import annotations

import numpy as np

IGNORE = 255


def confusion_by_hand(pairs, n: int, ignore_pred: bool = True) -> np.ndarray:
    """Rows gt, columns prediction; gt 255 never counts, prediction 255 is skipped (ignore_pred) or background."""
    cm = np.zeros((n, n), np.int64)
    for gt, pred in pairs:
        gt, pred = np.asarray(gt).astype(int), np.asarray(pred).astype(int)
        if not ignore_pred:
            pred = np.where(pred == IGNORE, 0, pred)
        keep = (gt != IGNORE) & (pred != IGNORE)
        np.add.at(cm, (gt[keep], pred[keep]), 1)
    return cm


def reference_scores(cm: np.ndarray) -> dict:
    """IoU per class, mIoU, pixel accuracy and foreground-mean precision/recall/F1 of a confusion matrix."""
    per_class, precision, recall, f1 = [], [], [], []
    for c in range(len(cm)):
        tp, in_gt, in_pred = cm[c, c], cm[c].sum(), cm[:, c].sum()
        seen = in_gt + in_pred > 0
        per_class.append(tp / (in_gt + in_pred - tp) if seen else np.nan)
        if c > 0 and seen:  # background is left out of the P/R/F1 means; an unseen class counts nowhere
            precision.append(tp / in_pred if in_pred else 0.0)
            recall.append(tp / in_gt if in_gt else 0.0)
            f1.append(2 * tp / (in_gt + in_pred))
    return {"per_class": per_class, "miou": float(np.nanmean(per_class)), "pixel_acc": np.trace(cm) / cm.sum(),
            "precision": float(np.mean(precision)), "recall": float(np.mean(recall)), "f1": float(np.mean(f1))}


def reference_seed_sweep(items: list, n: int) -> dict:
    """Seed scores at the best background threshold of 0.00..0.95 over (maps, class_ids, gt) items.

    The seed is the strongest class where its map exceeds t (compared in the maps' float32), background
    elsewhere; gt 255 is not scored; the lowest t wins ties. Also returns the mIoU curve.
    """
    curve, best = [], None
    for t in [round(0.05 * i, 2) for i in range(20)]:
        seeds = []
        for maps, class_ids, gt in items:
            seed = np.zeros(gt.shape, np.int64)
            if len(class_ids):
                seed = np.where(maps.max(0) > np.float32(t), class_ids[maps.argmax(0)], 0)
            seeds.append((gt, seed))
        scores = reference_scores(confusion_by_hand(seeds, n))
        curve.append(scores["miou"])
        if best is None or scores["miou"] > best["miou"]:
            best = {**scores, "threshold": t}
    return {**best, "curve": curve}
