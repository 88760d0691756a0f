"""Pixel-labelled training data for segmenters: pseudo-label PNGs (255 = uncertain) or the true masks.

`labels="gt"` reads SegmentationClass/<id>.png (the fully supervised baseline); any other value is a
pseudo-label folder (the pseudo job's output folder or its labels/ subfolder) holding <id>.png.
Images without a label file are left out (a pseudo-label run may cover part of a split); the count is
reported. Samples get the classifier's recipe: random scale, flip, pad (mean colour / 255) and crop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakseg.data.augment import scale_flip_crop, to_tensor
from weakseg.data.classes import IGNORE_INDEX
from weakseg.data.loading import EpochLoader
from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError
from weakseg.io import read_label_png

GT_LABELS = "gt"


def label_folder(labels: str | os.PathLike) -> Path:
    """The folder holding <id>.png for a pseudo-label output folder (or its labels/ folder)."""
    folder = Path(labels)
    if (folder / "labels").is_dir():
        folder = folder / "labels"
    if not folder.is_dir():
        raise DataError(
            f"{labels}: pseudo-label folder not found (pass a pseudo output folder, its labels/ folder, or 'gt')"
        )
    return folder


def pseudo_manifest(labels: str | os.PathLike) -> dict[str, Any] | None:
    """The pseudo job's manifest.json next to the labels (None for 'gt' or a bare folder of PNGs)."""
    if str(labels) == GT_LABELS:
        return None
    folder = label_folder(labels)
    for path in (folder.parent / "manifest.json", folder / "manifest.json"):
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise DataError(f"{path}: unreadable pseudo-label manifest ({e})") from e
    return None


@dataclass
class LabelledSplit:
    """The ids of a split that have pixel labels, and where those labels come from."""

    dataset: VOCDataset
    labels: str
    ids: list[str]
    missing: int

    def label_path(self, image_id: str) -> Path:
        """The label PNG of an id."""
        if self.labels == GT_LABELS:
            return self.dataset.mask_path(image_id)
        return label_folder(self.labels) / f"{image_id}.png"

    def label(self, image_id: str) -> np.ndarray:
        """uint8 HxW label (0 background, 1..C classes, 255 ignored), checked against the image and the classes."""
        if self.labels == GT_LABELS:
            return self.dataset.require_mask(image_id)
        path = self.label_path(image_id)
        label = read_label_png(path)
        size = self.dataset.image_size(image_id)
        if label.shape != size:
            raise DataError(f"{path}: label is {label.shape[1]}x{label.shape[0]} but the image is {size[1]}x{size[0]}")
        n = len(self.dataset.classes)
        bad = np.unique(label[(label > n) & (label != IGNORE_INDEX)])
        if bad.size:
            raise DataError(
                f"{path}: label values {bad.tolist()[:5]} exceed the {n} classes (allowed 0..{n} and {IGNORE_INDEX})"
            )
        return label


def labelled_split(data: str | os.PathLike, split: str, labels: str | os.PathLike) -> LabelledSplit:
    """Open a split and keep the ids that have a label PNG; DataError if none has, or classes disagree."""
    dataset = VOCDataset(data, split)
    labels = str(labels)
    manifest = pseudo_manifest(labels)
    if manifest is not None and manifest.get("classes") not in (None, dataset.classes):
        raise DataError(
            f"{labels}: pseudo labels were made for classes {manifest['classes']} but {data} has {dataset.classes}"
        )
    probe = LabelledSplit(dataset, labels, [], 0)
    ids = [i for i in dataset.ids if probe.label_path(i).is_file()]
    if not ids:
        where = "SegmentationClass/" if labels == GT_LABELS else str(label_folder(labels))
        raise DataError(f"{where}: no label PNG for any image of split {split!r}")
    return LabelledSplit(dataset, labels, ids, len(dataset.ids) - len(ids))


class LabelledCache:
    """Decoded images (float [3,H,W]) and labels (int64 [H,W]) of a labelled split, kept after first use."""

    def __init__(self, split: LabelledSplit) -> None:
        self.split = split
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        if image_id not in self._cache:
            image = to_tensor(self.split.dataset.image(image_id))
            label = torch.from_numpy(self.split.label(image_id).astype(np.int64))
            self._cache[image_id] = (image, label)
        return self._cache[image_id]


def segmentation_loader(
    split: LabelledSplit, crop: int, scale_range: tuple[float, float], batch_size: int, seed: int
) -> EpochLoader:
    """Batches {"image" [B,3,crop,crop], "label" int64 [B,crop,crop]} with random scale, flip and crop."""
    cache = LabelledCache(split)

    def make_sample(index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        image, label = cache(split.ids[index])
        image, label = scale_flip_crop(image, rng, crop, scale_range, label=label)
        return {"image": image, "label": label}

    return EpochLoader(len(split.ids), make_sample, batch_size, seed=seed)


BOX_METHODS = frozenset({"bbam"})  # pseudo-label methods that consume bounding boxes


def infer_supervision(labels: str | os.PathLike) -> str:
    """The label form a training run consumed: 'full' for true masks, 'box' for box-driven pseudo labels,
    else 'class' (CAM-family pseudo labels come from image-level class tags)."""
    if str(labels) == GT_LABELS:
        return "full"
    manifest = pseudo_manifest(labels) or {}
    method = (manifest.get("method") or {}).get("method", "")
    return "box" if method in BOX_METHODS else "class"
