"""Segmenter inference on one image: class probabilities (optionally multi-scale + flip), optional dense CRF, mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weakseg.data.augment import to_tensor

if TYPE_CHECKING:  # the CRF (pydensecrf) is imported only when an inference asks for it
    from weakseg.refine.crf import CRFConfig

MULTISCALE_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)


@dataclass(frozen=True)
class InferenceConfig:
    """How a mask is predicted: scales whose softmax is averaged, horizontal flip, and an optional dense CRF."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: CRFConfig | None = None
    max_side: int | None = None  # images larger than this are segmented at a reduced size, then upsampled

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive and non-empty, got {self.scales}")
        if self.max_side is not None and self.max_side < 8:
            raise ValueError(f"max_side must be >= 8, got {self.max_side}")

    @classmethod
    def multiscale(cls, crf: CRFConfig | None = None, max_side: int | None = None) -> InferenceConfig:
        """The --multiscale setting: five scales 0.5..1.5 and flips."""
        return cls(scales=MULTISCALE_SCALES, flip=True, crf=crf, max_side=max_side)


def segment_probs(
    model: nn.Module, image: np.ndarray, device: torch.device, cfg: InferenceConfig = InferenceConfig()
) -> torch.Tensor:
    """Softmax class probabilities [C+1, H, W] (on CPU) for a uint8 HxWx3 image, averaged over scales and flips."""
    x = to_tensor(image)[None].to(device)
    H, W = x.shape[-2:]
    base = 1.0
    if cfg.max_side and max(H, W) > cfg.max_side:
        base = cfg.max_side / max(H, W)
    total = torch.zeros(0)
    with torch.no_grad():
        for s in cfg.scales:
            size = (max(8, round(H * s * base)), max(8, round(W * s * base)))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if size != (H, W) else x
            if cfg.flip:
                xs = torch.cat([xs, xs.flip(-1)])
            probs = model(xs).float().softmax(dim=1)
            if cfg.flip:
                probs = (probs[:1] + probs[1:].flip(-1)) / 2
            if probs.shape[-2:] != (H, W):
                probs = F.interpolate(probs, size=(H, W), mode="bilinear", align_corners=False)
            total = probs[0] if total.numel() == 0 else total + probs[0]
    return (total / len(cfg.scales)).cpu()


def segment(
    model: nn.Module, image: np.ndarray, device: torch.device, cfg: InferenceConfig = InferenceConfig()
) -> np.ndarray:
    """uint8 HxW mask (0 background, 1..C classes) for a uint8 HxWx3 image; CRF-refined when cfg.crf is set."""
    probs = segment_probs(model, image, device, cfg).numpy()
    if cfg.crf is not None:
        from weakseg.refine.crf import crf_probs

        probs = crf_probs(image, probs, cfg.crf)
    return probs.argmax(axis=0).astype(np.uint8)
