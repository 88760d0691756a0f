"""PAR: the training-free pixel-adaptive refinement of AFA / ToCo (Ru et al. 2022, 2023).

Each pixel looks at its 8 neighbours at every dilation (1, 2, 4, 8, 12, 24 by default: 48 neighbours, the
image replicate-padded). The RGB affinity to a neighbour is -(|I_i - I_j| / std_j / w1)^2, std_j the
standard deviation of the neighbours' values (per channel), averaged over channels; the position affinity
is the same kernel on the neighbours' distances (d, or d * sqrt(2) on the diagonals). The weights are
softmax(RGB) + w2 * softmax(position) over the neighbours, and the maps are refined num_iter times by
maps = sum(neighbour maps * weights).

The authors' weights sum to 1 + w2 per pixel, so their refined maps grow by (1 + w2)^num_iter everywhere
(argmax unchanged); `normalize` (the default) divides by 1 + w2, so the weights sum to 1 and a map keeps its
scale (thresholds such as a background score stay meaningful).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))  # the authors' kernel order


@dataclass(frozen=True)
class PARConfig:
    """PAR's hyper-parameters (the authors' defaults)."""

    dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
    num_iter: int = 10  # refinement iterations
    w1: float = 0.3  # temperature of both kernels, in units of the neighbourhood's std
    w2: float = 0.01  # weight of the position kernel
    eps: float = 1e-8  # added to the std (a flat neighbourhood gives uniform weights)
    normalize: bool = True  # divide the weights by 1 + w2 so they sum to 1 (the authors' sum to 1 + w2)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if not self.dilations or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.dilations):
            raise ValueError(f"PAR dilations must be positive ints, got {self.dilations!r}")
        if isinstance(self.num_iter, bool) or not isinstance(self.num_iter, int) or self.num_iter < 0:
            raise ValueError(f"PAR num_iter must be an int >= 0, got {self.num_iter!r}")
        if not (math.isfinite(self.w1) and self.w1 > 0):
            raise ValueError(f"PAR w1 must be > 0, got {self.w1!r}")
        if not (math.isfinite(self.w2) and self.w2 >= 0):
            raise ValueError(f"PAR w2 must be >= 0, got {self.w2!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"PAR eps must be > 0, got {self.eps!r}")


def par_offsets(dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """The neighbours (dy, dx): the 8 directions at each dilation, in the authors' order."""
    return [(dy * d, dx * d) for d in dilations for dy, dx in _DIRECTIONS]


def _neighbours(x: torch.Tensor, offsets: list[tuple[int, int]]) -> list[torch.Tensor]:
    """x [C,H,W] at each offset (replicate padding: an index past the border reads the border)."""
    h, w = x.shape[-2:]
    r = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    xp = F.pad(x[None], (r, r, r, r), mode="replicate")[0]
    return [xp[:, r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in offsets]


def _check_image(image: np.ndarray) -> np.ndarray:
    """Validate a uint8 HxWx3 image."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"PAR image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    return image


def par_affinity(
    image: np.ndarray, config: PARConfig | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """PAR's weights [P,H,W] (P = 8 x dilations) for a uint8 HxWx3 image: each pixel's weights over its neighbours."""
    config = config or PARConfig()
    config.validate()
    image = _check_image(image)
    img = torch.from_numpy(np.ascontiguousarray(image)).to(device, torch.float32).permute(2, 0, 1) / 255.0
    offsets = par_offsets(config.dilations)
    rgb = torch.zeros((len(offsets), *img.shape[1:]), device=img.device)  # [P,H,W]
    for c in range(img.shape[0]):  # one channel at a time: a few [P,H,W] buffers, not [3,P,H,W] ones
        nb = torch.stack(_neighbours(img[c : c + 1], offsets))[:, 0]  # [P,H,W]
        std = nb.std(0)  # unbiased, over the neighbours (as the authors)
        rgb -= ((nb - img[c]).abs_() / (std + config.eps) / config.w1).square_()
    rgb /= img.shape[0]  # the mean over channels
    diagonal = torch.tensor([math.sqrt(2.0) if dy and dx else 1.0 for dy, dx in _DIRECTIONS], device=img.device)
    dist = torch.cat([diagonal * d for d in config.dilations])  # [P]
    pos = -((dist / (dist.std() + config.eps) / config.w1) ** 2)
    weights = torch.softmax(rgb, 0) + config.w2 * torch.softmax(pos, 0)[:, None, None]
    if config.normalize:
        weights /= 1 + config.w2
    return weights


def par_refine(
    image: np.ndarray, scores: np.ndarray, config: PARConfig | None = None, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Refine scores [K,H,W] on a uint8 HxWx3 image with PAR; returns float32 [K,H,W]."""
    config = config or PARConfig()
    image = _check_image(image)
    scores = np.asarray(scores)
    if scores.ndim != 3:
        raise ValueError(f"PAR scores must be [K,H,W], got shape {scores.shape}")
    if scores.shape[1:] != image.shape[:2]:
        raise ValueError(f"PAR scores are {scores.shape[1:]} but the image is {image.shape[:2]}")
    if not np.issubdtype(scores.dtype, np.number) or not np.isfinite(scores).all():
        raise ValueError("PAR scores must be finite numbers")
    weights = par_affinity(image, config, device)
    if scores.shape[0] == 0 or config.num_iter == 0:
        return scores.astype(np.float32)
    offsets = par_offsets(config.dilations)
    x = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).to(weights.device)
    for _ in range(config.num_iter):
        refined = torch.zeros_like(x)
        for p, nb in enumerate(_neighbours(x, offsets)):
            refined.addcmul_(weights[p], nb)
        x = refined
    return x.cpu().numpy()
