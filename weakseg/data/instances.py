"""Instance-segmentation samples: (image, {boxes, labels, masks}) in torchvision's Mask R-CNN convention, from the
true masks of a VOC-layout dataset or from a pseudo-label folder.

Sources (`labels`):
- `gt`: SegmentationObject/<id>.png (0 background, k = the k-th <object> of Annotations/<id>.xml in file order, as
  VOC defines it and weakseg.data.synth writes it, 255 void) with the XML's classes, boxes and difficult flags
  (weakseg.data.detection's conversion: 0-based pixel-edge xyxy).
- a pseudo-label folder (`weakseg pseudo --method box|grabcut|bbam`): `<labels>/instances/<id>.png` (the same
  index PNG: 0 background, 1..N, 255 ignore) and `<labels>/instances/<id>.json`, `{"instances": [...]}` (or the
  list alone), one entry per instance: `index` (its value in the PNG; default: position + 1), `class` (name;
  alias `name`) and/or `label` (1-based class id; aliases `class_id`, `category_id`; when both are given they must
  agree), `box` ([x1, y1, x2, y2], 0-based pixel edges as weakseg.data.box_targets; alias `bbox`; default: the
  tight box of the instance's pixels). A PNG value that no entry names, a class not in the dataset, or a box
  outside the image is a DataError naming the file. Images of the split without an instances/<id>.png are left
  out and listed (`InstanceSplit.missing`); a PNG without its JSON (or the reverse) is an error.

Splits are segmentation splits (ImageSets/Segmentation/<split>.txt, or a list file): the images with masks.

Target masks are uint8 [N, H, W]: 1 on the instance, 0 elsewhere, 255 where the pixel is ignored: the PNG's 255
(void band, a pseudo label's uncertain band) and, for the true masks, the pixels of difficult objects, which are
neither taught as an instance nor as background (they are left out of the targets as the detector leaves them
out). weakseg.models.instance's mask loss leaves IGNORE pixels out. An entry without a single pixel in the PNG (an
object fully covered by a later one) has no mask to learn from: it is left out of the targets and counted
(`InstanceSplit.empty`). Training images without any instance left are skipped and counted (`skipped`), as the
detector skips images without boxes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakseg.data.box_targets import BoxError, check_box_targets
from weakseg.data.classes import IGNORE_INDEX
from weakseg.data.detection import BoxTarget, DetectionSplit, box_target
from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError
from weakseg.io import read_label_png

GT = "gt"
INSTANCES_DIR = "instances"


@dataclass
class InstanceTarget(BoxTarget):
    """The instances of one image: BoxTarget's boxes, labels and difficult flags, their masks and the void."""

    masks: torch.Tensor  # uint8 [N, H, W]: 1 the instance, 0 not, IGNORE_INDEX ignored
    void: torch.Tensor  # bool [H, W]: the index PNG's IGNORE_INDEX pixels

    def training(self) -> dict[str, torch.Tensor]:
        """Mask R-CNN's training target: the instances that are not difficult, with their masks."""
        keep = ~self.difficult
        return {"boxes": self.boxes[keep], "labels": self.labels[keep], "masks": self.masks[keep]}

    def binary_masks(self) -> np.ndarray:
        """bool [N, H, W]: the instances' pixels."""
        return (self.masks == 1).numpy()

    def with_pixels(self) -> InstanceTarget:
        """The instances that have at least one pixel."""
        keep = (self.masks == 1).flatten(1).any(1)
        return InstanceTarget(self.boxes[keep], self.labels[keep], self.difficult[keep], self.masks[keep], self.void)


def _masks(index_png: np.ndarray, values: list[int], ignore: np.ndarray) -> torch.Tensor:
    """uint8 [len(values), H, W] from an index PNG: 1 where the PNG holds the value, else IGNORE where `ignore`."""
    masks = np.zeros((len(values), *index_png.shape), dtype=np.uint8)
    for n, value in enumerate(values):
        mine = index_png == value
        masks[n][ignore & ~mine] = IGNORE_INDEX
        masks[n][mine] = 1
    return torch.from_numpy(masks)


def gt_instance_target(dataset: VOCDataset, image_id: str) -> InstanceTarget:
    """An image's true instances: SegmentationObject/<id>.png with the XML's k-th object for value k."""
    boxes = box_target(dataset, image_id)
    png_path = dataset.instance_mask_path(image_id)
    png = dataset.instance_mask(image_id)
    if png is None:
        raise DataError(f"{png_path}: instance mask not found (--labels gt needs SegmentationObject/<id>.png)")
    count = len(boxes.labels)
    values = np.unique(png[(png != 0) & (png != IGNORE_INDEX)])
    if values.size and int(values.max()) > count:
        raise DataError(
            f"{png_path}: instance ids {[int(v) for v in values if v > count][:5]} but "
            f"{dataset.annotation_path(image_id).name} has {count} objects (value k is the k-th <object>)"
        )
    void = png == IGNORE_INDEX
    difficult = np.isin(png, np.flatnonzero(boxes.difficult.numpy()) + 1)
    masks = _masks(png, list(range(1, count + 1)), void | difficult)
    return InstanceTarget(boxes.boxes, boxes.labels, boxes.difficult, masks, torch.from_numpy(void))


def _entries(path: Path) -> list[dict[str, Any]]:
    """The instance entries of a pseudo label's JSON."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable instance JSON ({e})") from e
    entries = doc.get("instances") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DataError(f'{path}: expected {{"instances": [{{...}}, ...]}} (or a list of instance objects)')
    return entries


def _first(entry: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((entry[k] for k in keys if k in entry), None)


def _entry_label(entry: dict[str, Any], n: int, classes: list[str], path: Path) -> int:
    """The 1-based class id of an entry (from its name and/or id, which must agree)."""
    name, label = _first(entry, ("class", "name")), _first(entry, ("label", "class_id", "category_id"))
    if name is None and label is None:
        raise DataError(f"{path}: instance {n} has neither a class name ('class') nor a class id ('label')")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= len(classes)):
        raise DataError(f"{path}: instance {n}: class id {label!r} is not in 1..{len(classes)} ({', '.join(classes)})")
    if name is not None:
        if name not in classes:
            raise DataError(f"{path}: instance {n}: unknown class {name!r} (classes: {', '.join(classes)})")
        if label is not None and classes[label - 1] != name:
            raise DataError(f"{path}: instance {n}: class {name!r} but class id {label} ({classes[label - 1]!r})")
        return classes.index(name) + 1
    assert label is not None
    return label


def _tight_box(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def pseudo_instance_target(dataset: VOCDataset, folder: Path, image_id: str) -> InstanceTarget:
    """An image's pseudo instances from <folder>/instances/<id>.png and .json (module docstring)."""
    png_path = folder / INSTANCES_DIR / f"{image_id}.png"
    json_path = png_path.with_suffix(".json")
    if not json_path.is_file():
        raise DataError(f"{json_path}: missing (every instances/<id>.png needs its .json)")
    png = read_label_png(png_path)
    height, width = dataset.image_size(image_id)
    if png.shape != (height, width):
        raise DataError(f"{png_path}: is {png.shape[1]}x{png.shape[0]} but the image is {width}x{height}")
    entries = _entries(json_path)
    values: list[int] = []
    for n, entry in enumerate(entries):
        index = _first(entry, ("index", "id", "instance"))
        index = n + 1 if index is None else index
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index < IGNORE_INDEX:
            raise DataError(f"{json_path}: instance {n}: index {index!r} is not an instance value 1..254")
        values.append(index)
    if len(set(values)) != len(values):
        raise DataError(f"{json_path}: instance indices repeat: {values}")
    present = {int(v) for v in np.unique(png)} - {0, IGNORE_INDEX}
    unnamed = sorted(present - set(values))
    if unnamed:
        raise DataError(
            f"{png_path}: instance ids {unnamed[:5]} are not in {json_path.name} (its indices: {sorted(values)})"
        )
    labels = [_entry_label(e, n, dataset.classes, json_path) for n, e in enumerate(entries)]
    boxes = []
    for n, (entry, value) in enumerate(zip(entries, values, strict=True)):
        box = _first(entry, ("box", "bbox"))
        if box is None:  # an entry without pixels gets the whole image; with_pixels() drops it
            box = _tight_box(png == value) if value in present else [0.0, 0.0, float(width), float(height)]
        try:
            check_box_targets([box], [labels[n]], height, width, len(dataset.classes) + 1)
        except (BoxError, TypeError, ValueError) as e:
            raise DataError(f"{json_path}: instance {n}: {e}") from e
        boxes.append([float(v) for v in box])
    void = png == IGNORE_INDEX
    return InstanceTarget(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        torch.zeros(len(labels), dtype=torch.bool),
        _masks(png, values, void),
        torch.from_numpy(void),
    )


def check_label_folder(folder: str | os.PathLike) -> Path:
    """The pseudo-label folder, checked to hold instances/; DataError otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: pseudo-label folder not found")
    if not (folder / INSTANCES_DIR).is_dir():
        raise DataError(
            f"{folder}: no {INSTANCES_DIR}/ folder; Mask R-CNN reads instance pseudo labels from "
            f"{INSTANCES_DIR}/<id>.png and .json (weakseg pseudo --method box|grabcut|bbam writes them)"
        )
    return folder


def label_manifest(folder: Path) -> dict[str, Any]:
    """<folder>/manifest.json ({} when absent); DataError when it does not parse."""
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from e
    return manifest if isinstance(manifest, dict) else {}


@dataclass
class InstanceSplit(DetectionSplit):
    """One split read for instance segmentation: its ids, where its masks come from and what was left out."""

    labels: Path | None = None  # a pseudo-label folder, None for the true masks
    missing: list[str] = field(default_factory=list)  # split ids without a pseudo label (left out)
    empty: int = 0  # instances without a pixel (left out of the targets)
    instances: int = 0  # instances kept

    def all_instances(self, image_id: str) -> InstanceTarget:
        """Every instance the image's labels name, with or without pixels (difficult ones flagged)."""
        if self.labels is None:
            return gt_instance_target(self.dataset, image_id)
        return pseudo_instance_target(self.dataset, self.labels, image_id)

    def target(self, image_id: str) -> InstanceTarget:
        """The image's instances that have pixels (difficult ones flagged)."""
        return self.all_instances(image_id).with_pixels()

    @property
    def source(self) -> str:
        """'gt' or the pseudo-label folder."""
        return GT if self.labels is None else str(self.labels)


def open_instance_split(
    root: str | os.PathLike, split: str | os.PathLike, labels: str | os.PathLike = GT, training: bool = True
) -> InstanceSplit:
    """Open a segmentation split with its instance masks ('gt' or a pseudo-label folder) and read every target once
    (DataError at the first defect, naming the file); with `training`, images without a non-difficult instance
    are skipped and listed."""
    dataset = VOCDataset(root, split)
    folder = None if str(labels) == GT else check_label_folder(labels)
    if folder is None and not (dataset.root / "Annotations").is_dir():
        raise DataError(f"{dataset.root}: no Annotations/ folder; --labels gt needs the XML classes of the objects")
    result = InstanceSplit(dataset, [], labels=folder)
    for image_id in dataset.ids:
        if folder is not None and not (folder / INSTANCES_DIR / f"{image_id}.png").is_file():
            if (folder / INSTANCES_DIR / f"{image_id}.json").is_file():
                raise DataError(f"{folder / INSTANCES_DIR / image_id}.png: missing (its .json exists)")
            result.missing.append(image_id)
            continue
        named = result.all_instances(image_id)
        target = named.with_pixels()
        result.empty += len(named.labels) - len(target.labels)
        if training and bool(target.difficult.all()):  # also when no instance is left
            result.skipped.append(image_id)
            continue
        result.ids.append(image_id)
        result.instances += int((~target.difficult).sum())
    if not result.ids:
        what = "a (non-difficult) instance with pixels" if training else "instance labels"
        raise DataError(f"{dataset.split_path}: no image of split {str(split)!r} has {what} in {result.source}")
    return result
