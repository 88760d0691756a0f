"""Image/label augmentation for training: random scale, horizontal flip, pad and crop.

Randomness comes from an explicit numpy Generator so a sample's augmentation is reproducible from
(seed, epoch, index) and training resumes exactly.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch
import torch.nn.functional as F

from weakseg.data.classes import IGNORE_INDEX
from weakseg.models.resnet_cam import IMAGENET_MEAN


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 [3,H,W] in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


@overload
def scale_flip_crop(
    image: torch.Tensor, rng: np.random.Generator, crop: int, scale_range: tuple[float, float], label: None = None
) -> tuple[torch.Tensor, None]: ...
@overload
def scale_flip_crop(
    image: torch.Tensor, rng: np.random.Generator, crop: int, scale_range: tuple[float, float], label: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]: ...
def scale_flip_crop(
    image: torch.Tensor,
    rng: np.random.Generator,
    crop: int,
    scale_range: tuple[float, float],
    label: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomly rescale (bilinear image, nearest label), flip, then pad (mean colour / ignore) and crop to crop x crop."""
    _, h, w = image.shape
    s = float(rng.uniform(*scale_range))
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        if label is not None:
            label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].to(label.dtype)
    if rng.random() < 0.5:
        image = image.flip(-1)
        label = label.flip(-1) if label is not None else None
    ph, pw = max(0, crop - nh), max(0, crop - nw)
    if ph or pw:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        canvas = mean.expand(3, nh + ph, nw + pw).clone()
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        canvas[:, top : top + nh, left : left + nw] = image
        image = canvas
        if label is not None:
            lab = torch.full((nh + ph, nw + pw), IGNORE_INDEX, dtype=label.dtype)
            lab[top : top + nh, left : left + nw] = label
            label = lab
        nh, nw = nh + ph, nw + pw
    y, x = int(rng.integers(0, nh - crop + 1)), int(rng.integers(0, nw - crop + 1))
    image = image[:, y : y + crop, x : x + crop]
    if label is not None:
        label = label[y : y + crop, x : x + crop]
    return image, label
