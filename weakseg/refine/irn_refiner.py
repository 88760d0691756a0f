"""IRN's semantic pseudo masks (the authors' `step/make_sem_seg_labels.py`) behind the Refiner interface.

Per image: the boundary map B at stride 4 (averaged with the flip, `boundary_tensor`); the maps (full resolution
in the maps/<id>.npz format) brought to stride 4 by averaging each 4 x 4 block (the last, partial blocks over
their own pixels; the authors' stride-4 CAMs are the CAM resampled to that grid, which our full-resolution maps
no longer hold) and each divided by its maximum (+1e-5, as the authors' CAMs); the sparse random walk
(`random_walk`: (maps * (1 - B)) @ T^(2^exp_times), beta, radius 5); upsampled x4 (bilinear), cropped to the
image, divided by its maximum, a background plane at bg_thresh (0.25), argmax -> 0 or the image's class ids.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from weakseg.models.irn import IRN, OUTPUT_STRIDE, load_irn
from weakseg.models.irn_infer import boundary_tensor
from weakseg.refine.random_walk import random_walk
from weakseg.refine.refiner import scores_to_label, with_background
from weakseg.refine.seed_label import check_maps

CAM_EPS = 1e-5  # the authors' CAM normalisation: cam / (max + 1e-5)


@dataclass(frozen=True)
class IRNRefineConfig:
    """The random walk's settings (the authors' defaults)."""

    beta: float = 10.0  # affinity exponent
    exp_times: int = 8  # the authors square the transition 8 times: 2^8 = 256 steps
    radius: int = 5  # neighbourhood radius of the walk (34 directions)
    bg_thresh: float = 0.25  # background plane (sem_seg_bg_thres)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if not (isinstance(self.beta, int | float) and math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}")
        if isinstance(self.exp_times, bool) or not isinstance(self.exp_times, int) or not 0 <= self.exp_times <= 16:
            raise ValueError(f"exp_times must be an int in 0..16 (steps = 2^exp_times), got {self.exp_times!r}")
        if isinstance(self.radius, bool) or not isinstance(self.radius, int) or self.radius < 2:
            raise ValueError(f"radius must be an int >= 2, got {self.radius!r}")
        if not (isinstance(self.bg_thresh, int | float) and math.isfinite(self.bg_thresh)):
            raise ValueError(f"bg_thresh must be a finite number, got {self.bg_thresh!r}")

    @property
    def steps(self) -> int:
        """Walk steps: 2^exp_times."""
        return 2**self.exp_times


def stride4_maps(maps: torch.Tensor) -> torch.Tensor:
    """[K,H,W] -> [K, ceil(H/4), ceil(W/4)]: 4 x 4 block means (partial blocks over their pixels), each / max."""
    small = F.avg_pool2d(maps[None].float(), OUTPUT_STRIDE, OUTPUT_STRIDE, ceil_mode=True)[0]
    return small / (small.flatten(1).amax(1).clamp_min(0).view(-1, 1, 1) + CAM_EPS)


class IRNRefiner:
    """IRN's random walk over its boundary map, then IRN's background rule (module docstring)."""

    def __init__(
        self,
        model: IRN,
        config: IRNRefineConfig | None = None,
        device: torch.device | str = "cpu",
        model_sha256: str = "",
    ) -> None:
        self.settings = config or IRNRefineConfig()
        self.settings.validate()
        self.model = model.to(device).eval()
        self.device = device  # execution only: not part of config()
        self.model_sha256 = model_sha256

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, config: IRNRefineConfig | None = None, device: torch.device | str = "cpu"
    ) -> IRNRefiner:
        """An IRNRefiner over a trained IRN (run folder or .safetensors), pinned to that file's sha256."""
        from weakseg.models.checkpoint import file_sha256

        return cls(load_irn(path, device), config, device, file_sha256(path))

    def scores(self, image: np.ndarray, maps: np.ndarray) -> torch.Tensor:
        """The walked class scores [K,H,W] (before the division by the maximum and the background plane)."""
        return self.walk(maps, boundary_tensor(self.model, image, self.device))

    def walk(self, maps: np.ndarray, edge: torch.Tensor) -> torch.Tensor:
        """The walked scores [K,H,W] of full-resolution maps over a given stride-4 boundary map [ceil(H/4), ceil(W/4)]."""
        h, w = maps.shape[1:]
        small = stride4_maps(torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(edge.device))
        if tuple(edge.shape) != tuple(small.shape[1:]):
            raise ValueError(f"the boundary map is {tuple(edge.shape)} but the maps at stride 4 are {small.shape[1:]}")
        s = self.settings
        rw = random_walk(small, edge, beta=float(s.beta), steps=s.steps, radius=s.radius)
        up = F.interpolate(rw[None], scale_factor=OUTPUT_STRIDE, mode="bilinear", align_corners=False)[0]
        return up[:, :h, :w]

    def refine(self, image: np.ndarray, maps: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """Label uint8 HxW (0 background, class ids) from a uint8 HxWx3 image, maps [K,H,W] and 1-based class ids."""
        maps, class_ids = check_maps(maps, class_ids)
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be uint8 HxWx3, got {image.dtype} {image.shape}")
        if image.shape[:2] != maps.shape[1:]:
            raise ValueError(f"maps are {maps.shape[1:]} but the image is {image.shape[:2]}")
        if maps.shape[0] == 0:
            return np.zeros(image.shape[:2], dtype=np.uint8)
        walked = self.scores(image, maps).float().cpu().numpy()
        return scores_to_label(with_background(walked, self.settings.bg_thresh), class_ids)

    def config(self) -> dict[str, Any]:
        """{"name": "irn", beta, exp_times, radius, bg_thresh, "irn_sha256"} in JSON form."""
        return {"name": "irn", **asdict(self.settings), "irn_sha256": self.model_sha256}
