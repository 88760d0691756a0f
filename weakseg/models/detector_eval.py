"""Run a detector over a split and score its boxes (COCO AP with pycocotools, VOC AP50 per class)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from weakseg.data.detection import DetectionImages, DetectionSplit
from weakseg.metrics.box_ap import ImageBoxes, box_ap_report


def predict_boxes(model: nn.Module, images: list[torch.Tensor], device: torch.device) -> list[dict[str, np.ndarray]]:
    """Detections {boxes xyxy, labels, scores} of a batch of [3, H, W] images in [0, 1], in image pixels."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model([im.to(device) for im in images])
    model.train(was_training)
    return [{k: v.detach().cpu().numpy() for k, v in o.items()} for o in out]


def predict_split(
    model: nn.Module,
    split: DetectionSplit,
    device: torch.device,
    *,
    batch: int = 8,
    limit: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[str, dict[str, np.ndarray], DetectionImages]]:
    """(image id, predict_boxes' output, the image cache) for the split's first `limit` images, `batch` at a time."""
    cache = DetectionImages(split)
    ids = split.ids[:limit] if limit is not None else split.ids
    bar = tqdm(total=len(ids), desc="detect", unit="img", disable=not progress, leave=False)
    for i in range(0, len(ids), batch):
        chunk = ids[i : i + batch]
        predictions = predict_boxes(model, [cache.image(j) for j in chunk], device)
        for image_id, pred in zip(chunk, predictions, strict=True):
            yield image_id, pred, cache
        bar.update(len(chunk))
    bar.close()


def evaluate_detector(
    model: nn.Module,
    split: DetectionSplit,
    device: torch.device,
    *,
    batch: int = 8,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Box AP of the model on the split's images (difficult objects ignored, as VOC does); see box_ap_report."""
    scored: list[ImageBoxes] = []
    for image_id, pred, cache in predict_split(model, split, device, batch=batch, limit=limit, progress=progress):
        target = cache.target(image_id)
        scored.append(
            ImageBoxes(
                target.boxes.numpy(),
                target.labels.numpy(),
                target.difficult.numpy(),
                pred["boxes"],
                pred["labels"],
                pred["scores"],
            )
        )
    return box_ap_report(scored, split.classes)
