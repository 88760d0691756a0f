"""Mask R-CNN instance segmenters (torchvision), on the detector's backbones, saved like every weakseg model.

A Mask R-CNN here is weakseg.models.detector's Faster R-CNN (the same backbones: MobileNetV3-Large-FPN default,
ResNet-50-FPN, EfficientNet-Lite0/1/2 FPN from scratch or the installed ImageNet weights; nothing downloaded) with
torchvision's mask branch added: MultiScaleRoIAlign to 14 x 14 over the box head's FPN levels, MaskRCNNHeads
(`mask_head_layers` 3x3 convolutions of `mask_head_dim` channels; torchvision: 4 x 256) and MaskRCNNPredictor
(a 2x deconvolution and a 1x1 convolution: one 28 x 28 mask logit map per class). The state dict has torchvision
MaskRCNN's keys.

Ignore regions. torchvision's maskrcnn_loss has no ignore label. `IgnoreMaskRoIHeads` (a RoIHeads) computes the
training mask loss itself with `masked_mask_loss`: target masks are uint8 with 1 on the instance, 0 off it and
IGNORE_INDEX (255) on pixels that must not count. Per positive RoI, the instance's pixels (fg = mask == 1) and the
valid pixels (v = mask != 255) are RoIAligned to M x M (M = 28) exactly as torchvision projects its binary targets;
the target of a cell is fg / v (the foreground share of its valid samples) and its weight is v, and the loss is
sum(v * BCE(logit, fg / v)) / sum(v) over every positive RoI's cells. A cell whose samples are all ignored weighs
0; with no ignored pixel v = 1 everywhere and the loss is torchvision's mean BCE. Everything else (RoI sampling,
box losses, inference) is torchvision's RoIHeads: at training time its own mask branch is switched off (`has_mask`)
and the loss is added on the same sampled RoIs (recorded by `select_training_samples`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import roi_align

from weakseg.data.classes import IGNORE_INDEX
from weakseg.models.checkpoint import save_weights
from weakseg.models.detector import DetectorConfig, build_detector, build_detector_structure, load_rcnn

KIND = "instance"
MASK_POOL_SIZE = 14  # RoIAlign output of the mask branch (torchvision's)
MASK_HEAD_DIM = 256
MASK_HEAD_LAYERS = 4


@dataclass(frozen=True)
class InstanceConfig(DetectorConfig):
    """DetectorConfig plus the mask head's size (what rebuilds a Mask R-CNN)."""

    mask_head_dim: int = MASK_HEAD_DIM  # channels of the mask head's convolutions and its deconvolution
    mask_head_layers: int = MASK_HEAD_LAYERS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_head_dim < 1 or self.mask_head_layers < 1:
            raise ValueError("mask_head_dim and mask_head_layers must be >= 1")


def masked_mask_loss(
    mask_logits: torch.Tensor,
    proposals: list[torch.Tensor],
    gt_masks: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
    matched_idxs: list[torch.Tensor],
) -> torch.Tensor:
    """Mask R-CNN's mask loss with IGNORE_INDEX pixels left out (module docstring); torchvision's maskrcnn_loss
    arguments: logits [P, C, M, M], per image the positive proposals [P_i, 4], target masks [N_i, H, W] (uint8),
    target labels [N_i] and the matched target of each proposal [P_i]."""
    size = mask_logits.shape[-1]
    labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, matched_idxs, strict=True)])
    fg, valid = [], []
    for masks, boxes, idx in zip(gt_masks, proposals, matched_idxs, strict=True):
        rois = torch.cat([idx[:, None].to(boxes), boxes], dim=1)
        planes = torch.stack([masks == 1, masks != IGNORE_INDEX], dim=1).to(boxes)  # [N, 2, H, W]
        projected = roi_align(planes, rois, (size, size), 1.0)  # torchvision's project_masks_on_boxes, 2 planes
        fg.append(projected[:, 0])
        valid.append(projected[:, 1])
    if labels.numel() == 0:
        return mask_logits.sum() * 0
    fg_share, weight = torch.cat(fg), torch.cat(valid)
    target = torch.where(weight > 0, fg_share / weight.clamp_min(1e-12), torch.zeros_like(weight)).clamp(0, 1)
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    total = weight.sum()
    if not total > 0:
        return mask_logits.sum() * 0
    return (bce * weight).sum() / total


class IgnoreMaskRoIHeads(RoIHeads):
    """torchvision's RoIHeads with the training mask loss of `masked_mask_loss` (module docstring)."""

    _sampled: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None

    def has_mask(self) -> bool:
        """torchvision's mask branch runs at inference only; the training mask loss is this class's."""
        return self.mask_branch() and not self.training

    def mask_branch(self) -> bool:
        """Whether the mask modules are present."""
        return RoIHeads.has_mask(self)

    def select_training_samples(self, proposals, targets):
        """torchvision's RoI sampling, its result recorded for the mask loss."""
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        self._sampled = (proposals, matched_idxs, labels)
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):
        """torchvision's forward; at training time plus `loss_mask` over the positive sampled RoIs."""
        if self.training and self.mask_branch():
            if targets is None or not all("masks" in t for t in targets):
                raise ValueError("Mask R-CNN training targets need 'masks'")
        result, losses = super().forward(features, proposals, image_shapes, targets)
        if self.training and self.mask_branch():
            assert self._sampled is not None and targets is not None
            sampled, matched, labels = self._sampled
            self._sampled = None
            positive = [torch.where(lab > 0)[0] for lab in labels]
            boxes = [p[i] for p, i in zip(sampled, positive, strict=True)]
            assert self.mask_roi_pool is not None and self.mask_head is not None and self.mask_predictor is not None
            logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
            losses["loss_mask"] = masked_mask_loss(
                logits,
                boxes,
                [t["masks"] for t in targets],
                [t["labels"] for t in targets],
                [m[i] for m, i in zip(matched, positive, strict=True)],
            )
        return result, losses


def with_mask_branch(model: FasterRCNN, config: InstanceConfig) -> FasterRCNN:
    """The detector with torchvision's mask branch (module docstring) and the ignore-aware mask loss."""
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    old = model.roi_heads
    heads = IgnoreMaskRoIHeads(
        old.box_roi_pool,
        old.box_head,
        old.box_predictor,
        fg_iou_thresh=old.proposal_matcher.high_threshold,
        bg_iou_thresh=old.proposal_matcher.low_threshold,
        batch_size_per_image=old.fg_bg_sampler.batch_size_per_image,
        positive_fraction=old.fg_bg_sampler.positive_fraction,
        bbox_reg_weights=old.box_coder.weights,
        score_thresh=old.score_thresh,
        nms_thresh=old.nms_thresh,
        detections_per_img=old.detections_per_img,
        mask_roi_pool=MultiScaleRoIAlign(old.box_roi_pool.featmap_names, MASK_POOL_SIZE, sampling_ratio=2),
        mask_head=MaskRCNNHeads(model.backbone.out_channels, [config.mask_head_dim] * config.mask_head_layers, 1),
        mask_predictor=MaskRCNNPredictor(config.mask_head_dim, config.mask_head_dim, config.num_classes),
    )
    model.roi_heads = heads
    return model


def build_instance_model(config: InstanceConfig, pretrained: str | None = None) -> FasterRCNN:
    """A Mask R-CNN for config (nothing downloaded); `pretrained` as weakseg.models.detector.build_detector."""
    return with_mask_branch(build_detector(config, pretrained), config)


def build_instance_structure(config: InstanceConfig) -> FasterRCNN:
    """A Mask R-CNN with config's module structure and arbitrary weights (what a checkpoint is loaded into)."""
    return with_mask_branch(build_detector_structure(config), config)


def save_instance_model(
    path: str | os.PathLike, model: nn.Module, config: InstanceConfig, extra: dict[str, Any] | None = None
) -> None:
    """Write a Mask R-CNN checkpoint (safetensors; metadata: kind 'instance' and the config)."""
    save_weights(path, model, KIND, config.to_dict(), extra)


def load_instance_model(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[FasterRCNN, InstanceConfig]:
    """Load a Mask R-CNN (eval mode, no parameter gradients) and its config from a run folder or .safetensors file;
    nothing is unpickled and nothing downloaded."""
    model, config = load_rcnn(path, device, KIND, InstanceConfig, build_instance_structure)
    assert isinstance(config, InstanceConfig)
    return model, config
