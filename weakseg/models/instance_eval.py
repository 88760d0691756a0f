"""Score instance masks against the true ones (weakseg.metrics.mask_ap): a Mask R-CNN's predictions on a split, or
a pseudo-label folder's instances (score 1 each), the Table 5.1 comparison of box pseudo labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from weakseg.data.instances import InstanceSplit, InstanceTarget
from weakseg.metrics.mask_ap import ABO_SCORE, ScoredImage, mask_ap_report, score_image
from weakseg.models.detector_eval import predict_split

MASK_THRESHOLD = 0.5  # a pixel belongs to a predicted instance when its pasted mask probability exceeds this


def _scored(truth: InstanceTarget, masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, abo_score: float):
    return score_image(
        truth.binary_masks(),
        truth.labels.numpy(),
        truth.difficult.numpy(),
        masks,
        labels,
        scores,
        void=truth.void.numpy(),
        abo_score=abo_score,
    )


def evaluate_instances(
    model: nn.Module,
    split: InstanceSplit,
    device: torch.device,
    *,
    batch: int = 8,
    limit: int | None = None,
    mask_threshold: float = MASK_THRESHOLD,
    abo_score: float = ABO_SCORE,
    progress: bool = False,
) -> dict[str, Any]:
    """Mask AP and ABO of a Mask R-CNN on the split's true instances (see weakseg.metrics.mask_ap); a predicted
    mask is its pasted probability map > mask_threshold."""
    scored: list[ScoredImage] = []
    for image_id, pred, cache in predict_split(model, split, device, batch=batch, limit=limit, progress=progress):
        truth = cache.target(image_id)
        assert isinstance(truth, InstanceTarget)
        masks = pred["masks"][:, 0] > mask_threshold
        scored.append(_scored(truth, masks, pred["labels"], pred["scores"], abo_score))
    return {"mask_threshold": mask_threshold, "abo_score": abo_score, **mask_ap_report(scored, split.classes)}


def evaluate_label_folder(
    truth: InstanceSplit, pseudo: InstanceSplit, *, limit: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Mask AP and ABO of a pseudo-label folder's instances (each a prediction of score 1) against the true
    instances, over the images of `truth`'s split that the folder labels (`pseudo.ids`)."""
    ids = pseudo.ids[:limit] if limit is not None else pseudo.ids
    scored = []
    for image_id in tqdm(ids, desc="score", unit="img", disable=not progress, leave=False):
        labels = pseudo.target(image_id)
        scored.append(
            _scored(
                truth.target(image_id),
                labels.binary_masks(),
                labels.labels.numpy(),
                np.ones(len(labels.labels)),
                ABO_SCORE,
            )
        )
    report = mask_ap_report(scored, truth.classes)
    return {"labels": pseudo.source, "images_without_labels": len(pseudo.missing), **report}
