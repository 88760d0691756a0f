"""A lazy reader of a PASCAL VOC 2012 style folder (images, masks, XML, split lists, image-level labels).

Layout under `root` (the VOC2012 folder): JPEGImages/<id>.jpg (or .png), SegmentationClass/<id>.png
(palette PNG: 0 background, i+1 for classes[i], 255 ignore), SegmentationObject/<id>.png,
Annotations/<id>.xml, ImageSets/Segmentation/<split>.txt, optional classes.txt and cls_labels.npy.
Nothing is decoded at construction; only the split list is read.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from weakseg.data.annotations import Annotation, ObjectBox, parse_voc_xml
from weakseg.data.classes import IGNORE_INDEX, load_classes
from weakseg.data.cls_labels import ClsKey, load_cls_labels, lookup_cls_labels
from weakseg.errors import DataError
from weakseg.io import read_label_png, read_rgb

log = logging.getLogger(__name__)

SPLIT_DIR = Path("ImageSets") / "Segmentation"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class Sample:
    """One decoded training example."""

    id: str
    image: np.ndarray
    mask: np.ndarray | None
    labels: np.ndarray


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Read a split list: one id per line (first token; a path token is reduced to its stem)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise DataError(f"{path}: split list not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read split list ({e})") from e
    ids = []
    for n, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        image_id = Path(tokens[0]).stem if "/" in tokens[0] else tokens[0]
        if not _SAFE_ID.match(image_id) or ".." in image_id:
            raise DataError(f"{path}: line {n}: invalid image id {tokens[0]!r}")
        ids.append(image_id)
    if not ids:
        raise DataError(f"{path}: split list is empty")
    return ids


class VOCDataset:
    """Lazy access to one split of a VOC-layout dataset."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | os.PathLike = "train",
        labels: str | os.PathLike = "xml",
        skip_bad: bool = False,
    ) -> None:
        """Open `root` (a VOC2012 folder) and read the split list; `labels` is "xml", "auto" or a cls_labels.npy path."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: VOC root folder not found")
        if not (self.root / "JPEGImages").is_dir():
            hint = next(
                (
                    f" (did you mean {c}?)"
                    for c in (self.root / "VOC2012", self.root / "VOCdevkit" / "VOC2012")
                    if (c / "JPEGImages").is_dir()
                ),
                "",
            )
            raise DataError(f"{self.root}: not a VOC2012 folder, it has no JPEGImages/{hint}")
        self.split_path = self._split_path(split)
        self.ids: list[str] = read_id_list(self.split_path)
        self.classes: list[str] = load_classes(self.root)
        self.skip_bad = skip_bad
        self.bad: list[tuple[str, str]] = []
        self.labels_path: Path | None = self._labels_source(labels)
        self._cls_table: dict[ClsKey, np.ndarray] | None = None
        self._annotations: dict[str, Annotation] = {}

    # -- construction helpers -------------------------------------------------------------------
    def _split_path(self, split: str | os.PathLike) -> Path:
        """Resolve a split name (ImageSets/Segmentation/<name>.txt) or a path to a list file."""
        text = str(split)
        if text.endswith(".txt") or os.sep in text or "/" in text:
            path = Path(split)
            if not path.is_file():
                raise DataError(f"{path}: split list not found")
            return path
        path = self.root / SPLIT_DIR / f"{text}.txt"
        if not path.is_file():
            available = sorted(p.stem for p in (self.root / SPLIT_DIR).glob("*.txt"))
            raise DataError(f"{path}: split {text!r} not found (available: {', '.join(available) or 'none'})")
        return path

    def _labels_source(self, labels: str | os.PathLike) -> Path | None:
        """None for XML labels, else the cls_labels.npy path to use."""
        if labels == "xml":
            return None
        if labels == "auto":
            path = self.root / "cls_labels.npy"
            return path if path.is_file() else None
        path = Path(labels)
        if not path.is_file():
            raise DataError(f"{path}: cls_labels file not found")
        return path

    # -- paths ------------------------------------------------------------------------------------
    def image_path(self, image_id: str) -> Path:
        """JPEGImages/<id>.jpg, or .png when there is no .jpg (the .jpg path if neither exists)."""
        jpg = self.root / "JPEGImages" / f"{image_id}.jpg"
        if not jpg.exists():
            png = jpg.with_suffix(".png")
            if png.exists():
                return png
        return jpg

    def mask_path(self, image_id: str) -> Path:
        """SegmentationClass/<id>.png (may not exist)."""
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def instance_mask_path(self, image_id: str) -> Path:
        """SegmentationObject/<id>.png (may not exist)."""
        return self.root / "SegmentationObject" / f"{image_id}.png"

    def annotation_path(self, image_id: str) -> Path:
        """Annotations/<id>.xml."""
        return self.root / "Annotations" / f"{image_id}.xml"

    # -- readers ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of ids in the split."""
        return len(self.ids)

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(height, width) of an image from its header, without decoding pixels."""
        path = self.image_path(image_id)
        if not path.is_file():
            raise DataError(f"{path}: image file not found")
        try:
            with Image.open(path) as img:
                return img.height, img.width
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"{path}: image does not decode ({e})") from e

    def image(self, image_id: str) -> np.ndarray:
        """The image as uint8 HxWx3 RGB."""
        return read_rgb(self.image_path(image_id))

    def _read_mask(self, path: Path, image_id: str, max_value: int | None) -> np.ndarray | None:
        """Read a label PNG and check its size against the image (and values against max_value)."""
        if not path.is_file():
            return None
        mask = read_label_png(path)
        size = self.image_size(image_id)
        if mask.shape != size:
            raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is {size[1]}x{size[0]}")
        if max_value is not None:
            bad = np.unique(mask[(mask > max_value) & (mask != IGNORE_INDEX)])
            if bad.size:
                raise DataError(
                    f"{path}: mask values {bad.tolist()[:5]} exceed the {max_value} classes "
                    f"(allowed 0..{max_value} and {IGNORE_INDEX})"
                )
        return mask

    def mask(self, image_id: str) -> np.ndarray | None:
        """Class mask uint8 HxW (0 background, i+1 = classes[i], 255 ignore); None if the image has none."""
        return self._read_mask(self.mask_path(image_id), image_id, len(self.classes))

    def require_mask(self, image_id: str) -> np.ndarray:
        """The class mask of an image that must have one; DataError naming the missing file otherwise."""
        mask = self.mask(image_id)
        if mask is None:
            raise DataError(f"{self.mask_path(image_id)}: ground-truth mask not found")
        return mask

    def instance_mask(self, image_id: str) -> np.ndarray | None:
        """Instance mask uint8 HxW (0 background, k = k-th object, 255 ignore); None if absent."""
        return self._read_mask(self.instance_mask_path(image_id), image_id, None)

    def annotation(self, image_id: str) -> Annotation:
        """The parsed XML annotation (cached)."""
        if image_id not in self._annotations:
            self._annotations[image_id] = parse_voc_xml(self.annotation_path(image_id))
        return self._annotations[image_id]

    def boxes(self, image_id: str) -> list[ObjectBox]:
        """The annotated object boxes."""
        return list(self.annotation(image_id).objects)

    def _xml_labels(self, image_id: str) -> np.ndarray:
        """Multi-hot labels from the XML object names (difficult objects included)."""
        index = {name: i for i, name in enumerate(self.classes)}
        vec = np.zeros(len(self.classes), dtype=np.float32)
        for box in self.annotation(image_id).objects:
            if box.name not in index:
                raise DataError(f"{self.annotation_path(image_id)}: unknown class name {box.name!r}")
            vec[index[box.name]] = 1.0
        return vec

    def _npy_labels(self, image_id: str) -> np.ndarray:
        """Multi-hot labels from cls_labels.npy."""
        assert self.labels_path is not None
        if self._cls_table is None:
            self._cls_table = load_cls_labels(self.labels_path)
        vec = lookup_cls_labels(self._cls_table, image_id)
        if vec is None:
            raise DataError(f"{self.labels_path}: no labels for image {image_id!r}")
        if vec.shape != (len(self.classes),):
            raise DataError(
                f"{self.labels_path}: labels of {image_id!r} have {vec.shape[0]} entries, "
                f"expected {len(self.classes)} classes"
            )
        return vec.astype(np.float32, copy=True)

    def labels(self, image_id: str) -> np.ndarray:
        """Image-level multi-hot labels, float32[len(classes)] (no background entry)."""
        return self._xml_labels(image_id) if self.labels_path is None else self._npy_labels(image_id)

    def label_ids(self, image_id: str) -> list[int]:
        """Label values (1-based; 0 is background) of the classes present in the image."""
        return [int(i) + 1 for i in np.flatnonzero(self.labels(image_id))]

    # -- validation and iteration -----------------------------------------------------------------
    def check(self, image_id: str, decode: bool = True) -> None:
        """Raise DataError if an id's image, annotation, labels or masks are bad."""
        ann = self.annotation(image_id)
        self.labels(image_id)
        height, width = self.image(image_id).shape[:2] if decode else self.image_size(image_id)
        if (height, width) != (ann.height, ann.width):
            raise DataError(
                f"{self.image_path(image_id)}: image is {width}x{height} but "
                f"{self.annotation_path(image_id).name} says {ann.width}x{ann.height}"
            )
        self.mask(image_id)
        self.instance_mask(image_id)

    def _report(self, image_id: str, err: DataError) -> None:
        """Record and log a bad id."""
        self.bad.append((image_id, str(err)))
        log.warning("skipping %s: %s", image_id, err)

    def validate(self, decode: bool = True) -> list[str]:
        """Check every id; return the good ids. With skip_bad, bad ids go to `self.bad`; else raise."""
        self.bad = []
        good = []
        for image_id in self.ids:
            try:
                self.check(image_id, decode=decode)
            except DataError as e:
                if not self.skip_bad:
                    raise
                self._report(image_id, e)
                continue
            good.append(image_id)
        return good

    def sample(self, image_id: str) -> Sample:
        """Decode one id into a Sample."""
        return Sample(id=image_id, image=self.image(image_id), mask=self.mask(image_id), labels=self.labels(image_id))

    def __iter__(self) -> Iterator[Sample]:
        """Yield decoded samples in split order; with skip_bad, bad ids are recorded in `self.bad` and skipped."""
        self.bad = []
        for image_id in self.ids:
            try:
                sample = self.sample(image_id)
            except DataError as e:
                if not self.skip_bad:
                    raise
                self._report(image_id, e)
                continue
            yield sample
