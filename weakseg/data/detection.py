"""Box-detection samples from a VOC-layout dataset: (image tensor, {boxes, labels}) in torchvision's convention.

Boxes. VOC XML boxes are 1-based inclusive pixel indices: xmin=1, xmax=W covers a whole W-pixel-wide image.
torchvision's detectors take continuous 0-based (x1, y1, x2, y2) corners, in which pixel i (0-based) spans
[i, i+1). So the inclusive 1-based range xmin..xmax spans [xmin - 1, xmax): `voc_to_xyxy` subtracts 1 from the
minimum corners only (width = xmax - xmin + 1), the convention detectron2's VOC reader uses. A 0 minimum (the
parser tolerates 0-based exporters) becomes -1 and is clamped to 0; a box that is then empty is an error.

Splits. `ImageSets/Main/<split>.txt` (VOC's detection lists) when it exists, else `ImageSets/Segmentation/`, or a
list file path. Classes: `classes.txt` (or VOC's 20); label i + 1 is classes[i], 0 is background.

Difficult objects (`<difficult>1`) are left out of training targets and kept, flagged, for evaluation, where VOC
ignores detections that match them. A training image with no box left to learn from is skipped and counted
(`DetectionSplit.skipped`), as torchvision's detection references and detectron2 filter images without
annotations: in a box-labelled split such an image is far more often an unlabelled one than a true negative, and
training on it as background would teach the detector to miss the objects it shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from weakseg.data.annotations import ObjectBox
from weakseg.data.augment import to_tensor
from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError

MAIN_SPLIT_DIR = Path("ImageSets") / "Main"


def voc_to_xyxy(box: ObjectBox, width: int, height: int) -> tuple[float, float, float, float]:
    """A VOC box (1-based inclusive) as 0-based continuous (x1, y1, x2, y2), clamped to the image."""
    x1, y1 = max(0.0, float(box.xmin - 1)), max(0.0, float(box.ymin - 1))
    x2, y2 = min(float(width), float(box.xmax)), min(float(height), float(box.ymax))
    return x1, y1, x2, y2


def detection_split_path(root: str | os.PathLike, split: str | os.PathLike) -> Path:
    """The list file of a detection split: ImageSets/Main/<split>.txt, else ImageSets/Segmentation/, or a path."""
    text = str(split)
    if text.endswith(".txt") or "/" in text or os.sep in text:
        return Path(split)
    main = Path(root) / MAIN_SPLIT_DIR / f"{text}.txt"
    if main.is_file():
        return main
    return Path(root) / "ImageSets" / "Segmentation" / f"{text}.txt"


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Boxes [N, 4] (x1, y1, x2, y2) of a horizontally flipped image of the given width."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


@dataclass
class BoxTarget:
    """The boxes of one image: every object (difficult ones flagged), 0-based xyxy, labels 1..C."""

    boxes: torch.Tensor  # float32 [N, 4]
    labels: torch.Tensor  # int64 [N]
    difficult: torch.Tensor  # bool [N]

    def training(self) -> dict[str, torch.Tensor]:
        """torchvision's training target: the boxes that are not difficult."""
        keep = ~self.difficult
        return {"boxes": self.boxes[keep], "labels": self.labels[keep]}


@dataclass
class DetectionSplit:
    """One split of a VOC-layout dataset read for box detection."""

    dataset: VOCDataset
    ids: list[str]  # the usable ids (for training: those with a box to learn from)
    skipped: list[str] = field(default_factory=list)  # training ids without any non-difficult box

    @property
    def classes(self) -> list[str]:
        """Foreground class names."""
        return self.dataset.classes

    def target(self, image_id: str) -> BoxTarget:
        """The image's targets (here its converted XML boxes; weakseg.data.instances adds masks)."""
        return box_target(self.dataset, image_id)


def open_detection_split(root: str | os.PathLike, split: str | os.PathLike, training: bool) -> DetectionSplit:
    """Open a split and check its annotations (XML parsed, class names known, sizes agreeing with the images);
    with `training`, images without a non-difficult box are left out and listed in `skipped`.
    DataError names the file (and the box) at the first defect."""
    root = Path(root)
    dataset = VOCDataset(root, detection_split_path(root, split))
    if not (root / "Annotations").is_dir():
        raise DataError(f"{root}: no Annotations/ folder; box detection needs VOC XML boxes (Annotations/<id>.xml)")
    ids, skipped = [], []
    for image_id in dataset.ids:
        target = box_target(dataset, image_id)
        if training and bool(target.difficult.all()):  # also true when there is no box at all
            skipped.append(image_id)
        else:
            ids.append(image_id)
    if training and not ids:
        raise DataError(f"{dataset.split_path}: no image of split {str(split)!r} has a (non-difficult) box to train on")
    return DetectionSplit(dataset, ids, skipped)


def box_target(dataset: VOCDataset, image_id: str) -> BoxTarget:
    """The converted boxes of one image; DataError for an unknown class, a size that disagrees with the image's
    header, or a box that is empty after conversion (the XML parser already refuses boxes outside the image)."""
    ann = dataset.annotation(image_id)
    xml = dataset.annotation_path(image_id)
    height, width = dataset.image_size(image_id)
    if (height, width) != (ann.height, ann.width):
        raise DataError(
            f"{dataset.image_path(image_id)}: image is {width}x{height} but {xml.name} says {ann.width}x{ann.height}"
        )
    index = {name: i + 1 for i, name in enumerate(dataset.classes)}
    boxes, labels, difficult = [], [], []
    for obj in ann.objects:
        if obj.name not in index:
            raise DataError(f"{xml}: unknown class name {obj.name!r} (classes: {', '.join(dataset.classes)})")
        x1, y1, x2, y2 = voc_to_xyxy(obj, width, height)
        if x2 <= x1 or y2 <= y1:
            raise DataError(f"{xml}: box of {obj.name!r} {obj.xyxy} is empty in the {width}x{height} image")
        boxes.append((x1, y1, x2, y2))
        labels.append(index[obj.name])
        difficult.append(obj.difficult)
    return BoxTarget(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(difficult, dtype=torch.bool),
    )


class DetectionImages:
    """Decoded images ([3, H, W] float in [0, 1]) and box targets of a split, cached after first use."""

    def __init__(self, split: DetectionSplit) -> None:
        self.split = split
        self._images: dict[str, torch.Tensor] = {}
        self._targets: dict[str, BoxTarget] = {}

    def image(self, image_id: str) -> torch.Tensor:
        """The decoded image (kept as uint8, returned as float)."""
        if image_id not in self._images:
            self._images[image_id] = torch.from_numpy(np.ascontiguousarray(self.split.dataset.image(image_id)))
        return to_tensor(self._images[image_id].numpy())

    def target(self, image_id: str) -> BoxTarget:
        """The image's boxes, every object included."""
        if image_id not in self._targets:
            self._targets[image_id] = self.split.target(image_id)
        return self._targets[image_id]

    def training_sample(self, image_id: str, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(image, training target), horizontally flipped with probability 0.5 (drawn from rng); instance masks
        [N, H, W], when the target has them, flip with the image."""
        image, target = self.image(image_id), self.target(image_id).training()
        if rng.random() < 0.5:
            image = image.flip(-1)
            target = {**target, "boxes": flip_boxes(target["boxes"], image.shape[-1])}
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return image, target
