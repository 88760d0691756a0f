"""IRN inference on one image (the authors' `EdgeDisplacement` and `step/make_sem_seg_labels.py`).

The image and its horizontal flip go through the network as one batch of two, each padded on the right and
bottom to the training crop with the model's mean colour (zero after normalisation; the authors pad to 512);
the outputs are cropped to ceil(H/4) x ceil(W/4), the flipped one flipped back, and the boundary is
sigmoid(mean of the two logits), as the authors average them. The displacement field is the unflipped image's.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from weakseg.data.augment import to_tensor
from weakseg.models.irn import IRN, OUTPUT_STRIDE


def padded_pair(model: IRN, image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """[2,3,Hp,Wp]: the image and its flip in [0,1], each padded right/bottom to the crop with the mean colour."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    x = to_tensor(image)
    _, h, w = x.shape
    hp, wp = max(h, model.config.crop), max(w, model.config.crop)
    mean = model.backbone.normalize.mean.detach().cpu().reshape(3, 1, 1).to(x.dtype)
    batch = mean.expand(2, 3, hp, wp).clone()
    batch[0, :, :h, :w] = x
    batch[1, :, :h, :w] = x.flip(-1)
    return batch.to(device)


@torch.no_grad()
def irn_outputs(model: IRN, image: np.ndarray, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary logits [2,h,w] (the image's, the flip's flipped back) and the image's displacement [2,h,w]."""
    h, w = math.ceil(image.shape[0] / OUTPUT_STRIDE), math.ceil(image.shape[1] / OUTPUT_STRIDE)
    edge, disp = model(padded_pair(model, image, device))
    edge, disp = edge[:, 0, :h, :w], disp[..., :h, :w]
    return torch.stack([edge[0], edge[1].flip(-1)]), disp[0]


def boundary_tensor(model: IRN, image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """The boundary map [ceil(H/4), ceil(W/4)] in [0,1] on `device`, averaged with the horizontal flip."""
    logits, _ = irn_outputs(model, image, device)
    return torch.sigmoid(logits[0] / 2 + logits[1] / 2)


def boundary_map(model: IRN, image: np.ndarray, device: torch.device | str) -> np.ndarray:
    """The boundary map float32 [ceil(H/4), ceil(W/4)] in [0,1] of a uint8 HxWx3 image, averaged with its flip."""
    return boundary_tensor(model, image, device).float().cpu().numpy()


def displacement_field(
    model: IRN, image: np.ndarray, device: torch.device | str, mean_shift: bool = True
) -> np.ndarray:
    """The displacement field float32 [2, ceil(H/4), ceil(W/4)] (dy, dx in stride-4 cells) of the image itself;
    with mean_shift, less the training images' mean displacement (the authors' MeanShift at inference)."""
    _, field = irn_outputs(model, image, device)
    if mean_shift:
        field = field - model.mean_shift.to(field).view(2, 1, 1)
    return field.float().cpu().numpy()
