"""The modules that are exported: plain uint8 pixels in, everything a client needs out.

Input `pixels`: uint8 RGB, NHWC [batch, height, width, 3], values 0..255, any height and width.
Scaling to [0,1] and ImageNet normalisation happen inside the graph, so clients send decoded pixels as is.
Segmenter outputs: `logits` float32 [batch, C+1, height, width] and `mask` uint8 [batch, height, width]
(argmax over classes, 0 = background). Classifier outputs: `logits` float32 [batch, C] and `cams`
float32 [batch, C, height, width], the per-class CAM of Eq. 2.1 at a single scale (ReLU(w_c^T f(x)) resized
to the input and divided by its maximum, in [0, 1]); no gradients are needed to serve it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weakseg.models.contract import CAMModel

INPUT_NAME = "pixels"
SEGMENTER_OUTPUTS = ("logits", "mask")
CLASSIFIER_OUTPUTS = ("logits", "cams")


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC [N,H,W,3] -> float NCHW [N,3,H,W] in [0,1] (the models normalise inside)."""
    return pixels.permute(0, 3, 1, 2).float() / 255.0


class SegmenterGraph(nn.Module):
    """pixels -> (logits, uint8 argmax mask)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels_to_float(pixels))
        return logits, logits.argmax(dim=1).to(torch.uint8)


class ClassifierGraph(nn.Module):
    """pixels -> (multi-label logits, Eq. 2.1 CAMs at input resolution)."""

    def __init__(self, model: CAMModel) -> None:
        super().__init__()
        self.model: CAMModel = model  # an nn.Module at run time, so registered as a submodule

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels_to_float(pixels)
        logits, cams = self.model.logits_and_cams(x)
        cams = F.interpolate(F.relu(cams), size=x.shape[-2:], mode="bilinear", align_corners=False)
        peak = cams.amax(dim=(2, 3), keepdim=True).clamp_min(1e-5)
        return logits, cams / peak
