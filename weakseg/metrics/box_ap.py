"""Box average precision: COCO's (pycocotools) and VOC's per-class AP50, from ground truth and detections.

Boxes are 0-based continuous (x1, y1, x2, y2) in image pixels (weakseg.data.detection's convention), labels
1..C. Difficult ground-truth objects count as VOC counts them: not as positives, and a detection that matches one
is neither a true nor a false positive. For pycocotools they are `iscrowd` annotations, its only ignore flag, which
behave the same way except that a detection's overlap with a crowd box is measured as intersection over the
detection's area (so several detections may fall on it).

COCO AP is AP@[.5:.95] (mean over IoU thresholds 0.50, 0.55, ..., 0.95 and 101 recall points, up to 100 detections
per image), with AP50 and AP75 at one threshold. VOC AP50 follows the VOC 2010+ devkit: a detection is a true
positive when its IoU with the best-overlapping ground-truth box of its class exceeds 0.5 (strictly) and that box
was not matched by a higher-scored detection; AP is the area under the precision envelope over all recall points.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IOU_VOC = 0.5


@dataclass
class ImageBoxes:
    """Ground truth and detections of one image (numpy arrays)."""

    gt_boxes: np.ndarray  # float [G, 4]
    gt_labels: np.ndarray  # int [G]
    gt_difficult: np.ndarray  # bool [G]
    boxes: np.ndarray  # float [D, 4]
    labels: np.ndarray  # int [D]
    scores: np.ndarray  # float [D]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2010+ AP: area under the monotone precision envelope, summed where recall changes."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_ap50_class(images: Sequence[ImageBoxes], label: int) -> float | None:
    """VOC AP at IoU > 0.5 of one class; None when the class has no non-difficult ground truth."""
    positives = sum(int(((im.gt_labels == label) & ~im.gt_difficult).sum()) for im in images)
    if positives == 0:
        return None
    dets = [(float(s), k, d) for k, im in enumerate(images) for d, s in enumerate(im.scores) if im.labels[d] == label]
    dets.sort(key=lambda t: -t[0])  # stable: ties keep image order
    used = [np.zeros(int((im.gt_labels == label).sum()), bool) for im in images]
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for n, (_, k, d) in enumerate(dets):
        im = images[k]
        mine = im.gt_labels == label
        if not mine.any():
            fp[n] = 1
            continue
        ious = box_iou(im.boxes[d], im.gt_boxes[mine])[0]
        j = int(np.argmax(ious))
        if ious[j] <= IOU_VOC:
            fp[n] = 1
        elif not im.gt_difficult[mine][j]:
            if used[k][j]:
                fp[n] = 1
            else:
                tp[n], used[k][j] = 1, True
        # a detection on a difficult object: neither
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return voc_ap(tp / positives, tp / np.maximum(tp + fp, np.finfo(np.float64).eps))


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_box_ap(images: Sequence[ImageBoxes], classes: Sequence[str]) -> dict[str, Any]:
    """pycocotools' bbox evaluation: {ap, ap50, ap75, per_class_ap50} (None where no ground truth exists)."""
    gt_anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for k, im in enumerate(images, 1):
        for box, label, difficult in zip(im.gt_boxes, im.gt_labels, im.gt_difficult, strict=True):
            xywh = _xywh(box)
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,  # ids from 1: pycocotools reads id 0 as "unmatched"
                    "image_id": k,
                    "category_id": int(label),
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": int(bool(difficult)),
                }
            )
        for box, label, score in zip(im.boxes, im.labels, im.scores, strict=True):
            dets.append({"image_id": k, "category_id": int(label), "bbox": _xywh(box), "score": float(score)})
    empty: dict[str, Any] = {"ap": None, "ap50": None, "ap75": None, "per_class_ap50": {c: None for c in classes}}
    has_gt = {int(a["category_id"]) for a in gt_anns if not a["iscrowd"]}
    if not has_gt:
        return empty
    if not dets:  # pycocotools cannot load an empty result list; every class with ground truth scores 0
        return {
            "ap": 0.0,
            "ap50": 0.0,
            "ap75": 0.0,
            "per_class_ap50": {c: (0.0 if i + 1 in has_gt else None) for i, c in enumerate(classes)},
        }
    evaluation = run_cocoeval(gt_anns, dets, len(images), classes, "bbox")
    stats = evaluation.stats
    precision = evaluation.eval["precision"]  # [T, R, K, area, maxDets]; -1 where a class has no ground truth
    per_class: dict[str, float | None] = {}
    for i, c in enumerate(classes):
        p = precision[0, :, i, 0, -1]
        per_class[c] = float(p.mean()) if (p > -1).all() else None

    def stat(v: float) -> float | None:
        return None if v < 0 else float(v)

    return {"ap": stat(stats[0]), "ap50": stat(stats[1]), "ap75": stat(stats[2]), "per_class_ap50": per_class}


def run_cocoeval(
    gt_anns: list[dict[str, Any]],
    dets: list[dict[str, Any]],
    images: int,
    classes: Sequence[str],
    iou_type: str,
    iou_thresholds: Sequence[float] | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> Any:
    """pycocotools' COCOeval of `iou_type` ('bbox' or 'segm') evaluated, accumulated and summarized, quietly, over
    images 1..images and categories 1..len(classes); `iou_thresholds` replaces params.iouThrs (default
    0.50:0.05:0.95); `sizes` gives each image's (height, width) (segm needs them). dets must not be empty
    (pycocotools cannot load an empty result list)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; stdout ends with our JSON
        gt = COCO()
        gt.dataset = {
            "images": [
                {"id": k, **({"height": sizes[k - 1][0], "width": sizes[k - 1][1]} if sizes else {})}
                for k in range(1, images + 1)
            ],
            "annotations": gt_anns,
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
        }
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(dets), iou_type)
        evaluation.params.imgIds = list(range(1, images + 1))
        if iou_thresholds is not None:
            evaluation.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def box_ap_report(images: Sequence[ImageBoxes], classes: Sequence[str]) -> dict[str, Any]:
    """COCO AP@[.5:.95], AP50, AP75 (pycocotools) and VOC AP50 per class with its mean over classes with ground truth."""
    voc = {c: voc_ap50_class(images, i + 1) for i, c in enumerate(classes)}
    scored = [v for v in voc.values() if v is not None]
    coco = coco_box_ap(images, classes)
    return {
        "coco_ap": coco["ap"],
        "coco_ap50": coco["ap50"],
        "coco_ap75": coco["ap75"],
        "coco_ap50_per_class": coco["per_class_ap50"],
        "voc_map50": float(np.mean(scored)) if scored else None,
        "voc_ap50_per_class": voc,
        "images": len(images),
        "objects": int(sum(int((~im.gt_difficult).sum()) for im in images)),
        "difficult": int(sum(int(im.gt_difficult.sum()) for im in images)),
        "detections": int(sum(len(im.scores) for im in images)),
    }
