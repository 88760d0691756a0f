"""The candidate OoD pool (Sec. 4.3.1) and OoD image sets for training.

A pool folder is the synthetic benchmark's `<VOC2012>/OoD` (JPEGImages/*.jpg, ImageSets/pool.txt, truth.csv)
or any folder holding JPEGImages/ or the images themselves. An OoD set for training is a review folder (its
`review.json` keeps), a review.json file, or a text list of image paths (relative to the list's folder).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weakseg.data.voc import read_id_list
from weakseg.errors import DataError
from weakseg.io import atomic_write_text, read_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_image(images_dir: Path, image_id: str) -> Path:
    """<images_dir>/<id> with the first existing suffix of IMAGE_SUFFIXES (the .jpg path if none exists)."""
    for suffix in IMAGE_SUFFIXES:
        path = images_dir / f"{image_id}{suffix}"
        if path.exists():
            return path
    return images_dir / f"{image_id}.jpg"


@dataclass
class OodPool:
    """The images of a candidate pool, by id (file stem)."""

    root: Path
    images_dir: Path
    ids: list[str]

    def image_path(self, image_id: str) -> Path:
        """The file of an id (the first existing suffix)."""
        return find_image(self.images_dir, image_id)

    def image(self, image_id: str) -> np.ndarray:
        """Decoded uint8 HxWx3 RGB."""
        return read_rgb(self.image_path(image_id))

    @property
    def truth_path(self) -> Path:
        """truth.csv beside the images (the synthetic benchmark's oracle)."""
        return self.root / "truth.csv"


def open_pool(path: str | os.PathLike) -> OodPool:
    """Open a pool folder: JPEGImages/ with ImageSets/pool.txt (else every image in it), or a plain image folder."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: OoD pool folder not found")
    images_dir = root / "JPEGImages" if (root / "JPEGImages").is_dir() else root
    listed = root / "ImageSets" / "pool.txt"
    if listed.is_file():
        ids = read_id_list(listed)
    else:
        ids = sorted(p.stem for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not ids:
        raise DataError(f"{root}: OoD pool holds no images")
    pool = OodPool(root.resolve(), images_dir.resolve(), ids)
    missing = next((i for i in ids if not pool.image_path(i).exists()), None)
    if missing is not None:
        raise DataError(f"{pool.image_path(missing)}: listed in the OoD pool but not found")
    return pool


def read_truth(path: str | os.PathLike) -> dict[str, bool]:
    """truth.csv (id, contains_foreground, classes) as {id: contains a foreground class}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: OoD truth file not found (--oracle needs the synthetic benchmark's truth.csv)")
    try:
        with path.open(newline="") as f:
            return {
                row["id"]: row["contains_foreground"].strip() not in ("0", "", "false", "False")
                for row in csv.DictReader(f)
            }
    except (KeyError, csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed truth.csv (need columns id, contains_foreground): {e}") from e


def read_path_list(path: str | os.PathLike) -> list[Path]:
    """A text list of image paths, one a line (relative paths are relative to the list's folder)."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read OoD image list ({e})") from e
    out = [
        (p if p.is_absolute() else path.parent / p)
        for p in map(Path, (ln for ln in lines if ln and not ln.startswith("#")))
    ]
    if not out:
        raise DataError(f"{path}: OoD image list is empty")
    missing = next((p for p in out if not p.is_file()), None)
    if missing is not None:
        raise DataError(f"{path}: lists {missing}, which does not exist")
    return out


def write_path_list(path: str | os.PathLike, images: list[Path]) -> None:
    """Write an OoD image list (absolute paths) atomically."""
    atomic_write_text(path, "".join(f"{Path(p).resolve()}\n" for p in images))
