"""Mask average precision (pycocotools' segm COCOeval) at IoU 0.25, 0.50, 0.70, 0.75 and COCO's AP@[.5:.95], and the
average best overlap (ABO), from true instance masks and predicted (or pseudo) masks.

IoU thresholds. pycocotools' default params.iouThrs, np.linspace(.5, .95, 10), has no 0.25. Here params.iouThrs
is set to IOU_THRESHOLDS = [0.25, 0.50, 0.55, ..., 0.95], each written as its decimal literal (the nearest double;
the default's 0.90 entry is 0.8999999999999999), so AP25 and AP70 come out of the same COCOeval run as the others,
read at thresholds exactly 0.25 and 0.70: a detection matches a truth at threshold t when their mask IoU >= t
(pycocotools' rule, greedy by score, one match per truth; an IoU of exactly 0.7 counts at 0.70). AP_t is the mean of
eval['precision'] at t (101 recall points, every class with truth, all areas, 100 detections per image), as
summarize() computes AP50; COCO AP is the mean over 0.50..0.95 only (0.25 is left out of it, so it equals
pycocotools' standard AP).

Void. The true index PNG's void pixels (255) belong to no instance; predicted masks are cut to the non-void pixels
before scoring, so void pixels count in no intersection and no union (as VOC's void is ignored in mIoU).
Difficult objects are pycocotools' crowd annotations: neither positives nor, when matched, false positives.

ABO (average best overlap): for every non-difficult true instance, the highest mask IoU with a predicted mask of
the same class whose score is >= `abo_score` (0 when there is none), averaged over all those instances of all
images (pseudo labels have score 1; `abo_score` 0.5 by default keeps a model's confident detections).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from weakseg.metrics.box_ap import run_cocoeval

IOU_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
REPORTED = {"ap25": 0.25, "ap50": 0.5, "ap70": 0.7, "ap75": 0.75}
COCO_RANGE = IOU_THRESHOLDS[1:]  # 0.50..0.95, COCO's AP
ABO_SCORE = 0.5


def encode(mask: np.ndarray) -> dict[str, Any]:
    """pycocotools' RLE of a bool HxW mask."""
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))


@dataclass
class ScoredImage:
    """One image's true and predicted instances as RLEs, with each true instance's best overlap."""

    gt: list[dict[str, Any]]
    gt_labels: np.ndarray  # int [G]
    gt_difficult: np.ndarray  # bool [G]
    masks: list[dict[str, Any]]
    labels: np.ndarray  # int [D]
    scores: np.ndarray  # float [D]
    size: tuple[int, int]  # (height, width)
    best_overlap: np.ndarray  # float [G]: ABO's term of each truth (difficult ones too; the report leaves them out)


def score_image(
    gt_masks: np.ndarray,
    gt_labels: np.ndarray,
    gt_difficult: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    void: np.ndarray | None = None,
    abo_score: float = ABO_SCORE,
) -> ScoredImage:
    """Encode one image (bool masks [G, H, W] and [D, H, W]; void HxW cut from the predictions) and compute the
    best overlap of each truth (module docstring)."""
    from pycocotools import mask as mask_utils

    gt_masks, masks = np.asarray(gt_masks, dtype=bool), np.asarray(masks, dtype=bool)
    if void is not None and masks.size:
        masks = masks & ~np.asarray(void, dtype=bool)[None]
    gt = [encode(m) for m in gt_masks]
    pred = [encode(m) for m in masks]
    labels, gt_labels = np.asarray(labels, dtype=np.int64), np.asarray(gt_labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    best = np.zeros(len(gt))
    if gt and pred:
        iou = np.asarray(mask_utils.iou(pred, gt, [0] * len(gt))).reshape(len(pred), len(gt))
        eligible = (labels[:, None] == gt_labels[None, :]) & (scores[:, None] >= abo_score)
        best = np.where(eligible, iou, 0.0).max(0)
    size = (int(gt_masks.shape[-2]), int(gt_masks.shape[-1]))
    return ScoredImage(gt, gt_labels, np.asarray(gt_difficult, dtype=bool), pred, labels, scores, size, best)


def _mean(values: np.ndarray) -> float | None:
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def mask_ap_report(images: Sequence[ScoredImage], classes: Sequence[str]) -> dict[str, Any]:
    """AP25/50/70/75, COCO AP@[.5:.95] and per-class AP50 (pycocotools segm, IOU_THRESHOLDS), ABO and counts."""
    from pycocotools import mask as mask_utils

    gt_anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for k, im in enumerate(images, 1):
        for rle, label, difficult in zip(im.gt, im.gt_labels, im.gt_difficult, strict=True):
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,  # from 1: pycocotools reads id 0 as "unmatched"
                    "image_id": k,
                    "category_id": int(label),
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": int(bool(difficult)),
                }
            )
        for rle, label, score in zip(im.masks, im.labels, im.scores, strict=True):
            dets.append({"image_id": k, "category_id": int(label), "segmentation": rle, "score": float(score)})
    has_gt = sorted({int(a["category_id"]) for a in gt_anns if not a["iscrowd"]})
    counted = [im.best_overlap[~im.gt_difficult] for im in images]
    overlaps = np.concatenate(counted) if counted else np.zeros(0)
    report: dict[str, Any] = {
        "abo": float(overlaps.mean()) if overlaps.size else None,
        "images": len(images),
        "instances": int(overlaps.size),
        "difficult": int(sum(int(im.gt_difficult.sum()) for im in images)),
        "predictions": len(dets),
        "iou_thresholds": list(IOU_THRESHOLDS),
    }
    if not has_gt:
        return {**{k: None for k in (*REPORTED, "coco_ap")}, "ap50_per_class": {c: None for c in classes}, **report}
    if not dets:  # pycocotools cannot load an empty result list: every class with truth scores 0
        per_class = {c: (0.0 if i + 1 in has_gt else None) for i, c in enumerate(classes)}
        return {**{k: 0.0 for k in (*REPORTED, "coco_ap")}, "ap50_per_class": per_class, **report}
    evaluation = run_cocoeval(gt_anns, dets, len(images), classes, "segm", IOU_THRESHOLDS, [im.size for im in images])
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area 'all', 100 detections
    index = {t: i for i, t in enumerate(IOU_THRESHOLDS)}
    out: dict[str, Any] = {name: _mean(precision[index[t]]) for name, t in REPORTED.items()}
    out["coco_ap"] = _mean(precision[[index[t] for t in COCO_RANGE]])
    out["ap50_per_class"] = {c: _mean(precision[index[0.5], :, i]) for i, c in enumerate(classes)}
    return {**out, **report}
