"""The refiner interface: maps of an image's classes -> a label PNG's content, and PAR behind it.

A refiner turns an image's maps (the `maps/<id>.npz` content: [K,H,W] in [0,1] and the 1-based class ids)
into a uint8 HxW label (0 background, class ids). Its `config()` is what a label folder's manifest pins;
execution settings (the device) stay out of it. `with_background` and `scores_to_label` are the steps shared
by refiners that score a background plane against the maps (IRN's sem_seg_bg_thres rule).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from weakseg.refine.par import PARConfig, par_refine
from weakseg.refine.seed_label import check_maps


@runtime_checkable
class Refiner(Protocol):
    """What the refine stage asks of a refiner."""

    def refine(self, image: np.ndarray, maps: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """Label uint8 HxW (0 background, class ids) from a uint8 HxWx3 image, maps [K,H,W] and 1-based class ids."""
        ...

    def config(self) -> dict[str, Any]:
        """The refiner's configuration in JSON form (what a manifest pins), with its "name"."""
        ...


def with_background(maps: np.ndarray, bg_score: float) -> np.ndarray:
    """float32 [K+1,H,W]: a constant background plane, then the maps divided by their largest value (if > 0)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must be [K,H,W], got shape {maps.shape}")
    top = float(maps.max()) if maps.size else 0.0
    if top > 0:
        maps = maps / top
    return np.concatenate([np.full((1, *maps.shape[1:]), bg_score, np.float32), maps])


def scores_to_label(scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """argmax over [background, classes...] scores [K+1,H,W] mapped to (0, class_ids...) as uint8 (ties: first)."""
    scores = np.asarray(scores)
    keys = np.concatenate([[0], np.asarray(class_ids).reshape(-1)]).astype(np.uint8)
    if scores.ndim != 3 or scores.shape[0] != keys.size:
        raise ValueError(f"scores must be [K+1,H,W] with K = {keys.size - 1} classes, got shape {scores.shape}")
    return keys[scores.argmax(0)]


@dataclass(frozen=True)
class PARRefiner:
    """PAR over [background plane, max-normalised maps...], then argmax."""

    par: PARConfig = field(default_factory=PARConfig)
    bg_score: float = 0.25  # the background plane (IRN's sem_seg_bg_thres)
    device: torch.device | str = "cpu"  # execution only: not part of config()

    def __post_init__(self) -> None:
        """Validate the configuration up front (before a folder of images is started)."""
        self.par.validate()
        if not (isinstance(self.bg_score, int | float) and math.isfinite(self.bg_score)):
            raise ValueError(f"bg_score must be a finite number, got {self.bg_score!r}")

    def refine(self, image: np.ndarray, maps: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """Label uint8 HxW from the image, its maps [K,H,W] in [0,1] and their 1-based class ids."""
        maps, class_ids = check_maps(maps, class_ids)
        scores = par_refine(image, with_background(maps, self.bg_score), self.par, self.device)
        return scores_to_label(scores, class_ids)

    def config(self) -> dict[str, Any]:
        """{"name": "par", "bg_score", "par": PARConfig fields} in JSON form."""
        par = asdict(self.par)
        par["dilations"] = list(par["dilations"])
        return {"name": "par", "bg_score": self.bg_score, "par": par}
