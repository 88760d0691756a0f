"""Grad-CAM (Eq. 2.2) at a chosen stage of the classifier.

Eq. 2.2 weights the feature map by the gradient of the class score element-wise
(`weighting="pixel"`); Selvaraju et al.'s original averages the gradient per channel first
(`weighting="channel"`). At the last stage of a bias-free-1x1-head-after-GAP network both equal CAM up
to a positive factor (exactly, after the h*w rescaling below), so the default target layer is an earlier stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from weakseg.attribution.base import AttributionMethod
from weakseg.models.contract import CAMModel


@dataclass(frozen=True)
class GradCAM(AttributionMethod):
    """ReLU(sum_k f_k * dS^c/df_k) at `target_layer`, one of the model's stages (ResNet: stem, layer1..layer4)."""

    target_layer: str = "layer3"
    weighting: str = "pixel"  # pixel (Eq. 2.2) | channel (GAP'd gradients, Selvaraju et al.)

    name = "gradcam"

    def __post_init__(self) -> None:
        if self.weighting not in ("pixel", "channel"):
            raise ValueError(f"weighting must be pixel or channel, got {self.weighting!r}")
        if not self.target_layer:
            raise ValueError("target layer must name a stage of the model (e.g. layer3)")

    def scale_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """One forward and one backward for all classes: the batch is repeated per class. [N, K, h, w]."""
        if self.target_layer not in model.stages:
            raise ValueError(f"gradcam target layer {self.target_layer!r} is not a stage of the model {model.stages}")
        n, k = x.shape[0], len(classes)
        with torch.no_grad():
            _, kept = model.stage_outputs(x, keep=(self.target_layer,))
        feats = kept[self.target_layer].repeat(k, 1, 1, 1).detach().requires_grad_(True)  # [K*N, D, h, w]
        with torch.enable_grad():
            logits, _ = model.forward_from(self.target_layer, feats)
            target = logits.view(k, n, -1)[torch.arange(k), :, classes]  # [K, N]
            (grad,) = torch.autograd.grad(target.sum(), feats)
        if self.weighting == "channel":
            grad = grad.mean(dim=(2, 3), keepdim=True)
        # x h*w: the class score is a spatial average, so raw Grad-CAM shrinks as 1/(h*w) with input size;
        # rescaling puts every scale of the multi-scale sum on the same footing (and makes layer4 == CAM).
        maps = F.relu((feats.detach() * grad).sum(dim=1)) * (feats.shape[-1] * feats.shape[-2])
        return maps.view(k, n, *maps.shape[-2:]).transpose(0, 1)
