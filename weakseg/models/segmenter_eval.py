"""Segmenter evaluation against ground-truth masks: mIoU, pixel accuracy and per-class IoU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError
from weakseg.io import json_float
from weakseg.metrics.confusion import ConfusionAccumulator, iou_per_class, miou, pixel_accuracy
from weakseg.models.segmenter_infer import InferenceConfig, segment


@dataclass
class SegmenterEvaluation:
    """Scores of a segmenter on the images of a split that have a ground-truth mask."""

    miou: float
    pixel_acc: float
    per_class: dict[str, float]
    images: int
    confusion: np.ndarray = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """{"miou", "pixel_acc", "per_class", "images"} with nan as null."""
        return {
            "miou": json_float(self.miou),
            "pixel_acc": json_float(self.pixel_acc),
            "per_class": {k: json_float(v) for k, v in self.per_class.items()},
            "images": self.images,
        }


def evaluate_segmenter(
    model: nn.Module,
    dataset: VOCDataset,
    device: torch.device,
    cfg: InferenceConfig = InferenceConfig(),
    limit: int | None = None,
    progress: bool = False,
) -> SegmenterEvaluation:
    """Predict every image of the split that has a mask (first `limit` of them) and score the predictions."""
    names = ["background", *dataset.classes]
    acc = ConfusionAccumulator(len(names))
    ids = [i for i in dataset.ids if dataset.mask_path(i).is_file()][:limit]
    if not ids:
        raise DataError(f"{dataset.split_path}: no image of this split has a ground-truth mask in SegmentationClass/")
    model.eval()
    for image_id in tqdm(ids, desc="evaluate", unit="img", disable=not progress, leave=False):
        acc.add(dataset.require_mask(image_id), segment(model, dataset.image(image_id), device, cfg))
    ious = iou_per_class(acc.matrix)
    return SegmenterEvaluation(
        miou=miou(acc.matrix),
        pixel_acc=pixel_accuracy(acc.matrix),
        per_class=dict(zip(names, ious.tolist(), strict=True)),
        images=len(ids),
        confusion=acc.matrix,
    )
