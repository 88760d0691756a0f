"""Seed labels from attribution maps: threshold against a constant background score, and IRN's fg/bg/ignore rule."""

from __future__ import annotations

import numpy as np

from weakseg.data.classes import IGNORE_INDEX
from weakseg.refine.crf import CRFConfig, crf_labels


def check_maps(maps: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate maps [K,H,W] against class_ids [K] (1-based, 1..254); return them as arrays."""
    maps = np.asarray(maps)
    class_ids = np.asarray(class_ids).reshape(-1).astype(np.int64)
    if maps.ndim != 3 or maps.shape[0] != class_ids.size:
        raise ValueError(f"maps must be [K,H,W] with K = len(class_ids) = {class_ids.size}, got shape {maps.shape}")
    if class_ids.size and (class_ids.min() < 1 or class_ids.max() >= IGNORE_INDEX):
        raise ValueError(f"class_ids must be 1-based label values in 1..{IGNORE_INDEX - 1}, got {class_ids.tolist()}")
    return maps, class_ids


def seed_indices(maps: np.ndarray, threshold: float) -> np.ndarray:
    """argmax over [threshold, maps...] as int64 HxW indices 0..K (0 = background; ties go to background)."""
    maps = np.asarray(maps)
    if maps.shape[0] == 0:
        return np.zeros(maps.shape[1:], dtype=np.int64)
    return np.where(maps.max(0) > threshold, maps.argmax(0) + 1, 0)


def threshold_seed(maps: np.ndarray, class_ids: np.ndarray, threshold: float) -> np.ndarray:
    """Seed label uint8 HxW: argmax over [threshold, maps...] mapped to (0, class_ids...)."""
    maps, class_ids = check_maps(maps, class_ids)
    keys = np.concatenate([[0], class_ids]).astype(np.uint8)
    return keys[seed_indices(maps, threshold)]


def refine_seed_label(
    image: np.ndarray | None,
    maps: np.ndarray,
    class_ids: np.ndarray,
    fg_thresh: float = 0.30,
    bg_thresh: float = 0.05,
    crf: CRFConfig | None = None,
) -> np.ndarray:
    """IRN's seed label: fg (at fg_thresh) keeps its class; 0 where fg and bg (bg_thresh) say background; else 255.

    With `crf` set, both thresholded index maps are CRF-refined on `image` (uint8 HxWx3) before combining,
    exactly as IRN's cam_to_ir_label; without it `image` is unused and may be None.
    """
    maps, class_ids = check_maps(maps, class_ids)
    keys = np.concatenate([[0], class_ids]).astype(np.uint8)
    fg = seed_indices(maps, fg_thresh)
    bg = seed_indices(maps, bg_thresh)
    if crf is not None:
        if image is None:
            raise ValueError("refine_seed_label with a CRF needs the image")
        fg = crf_labels(image, fg, keys.size, crf)
        bg = crf_labels(image, bg, keys.size, crf)
    label = keys[fg]
    label[fg == 0] = IGNORE_INDEX
    label[(fg == 0) & (bg == 0)] = 0
    return label
