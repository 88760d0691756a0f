"""Class names and the VOC colour palette."""

from __future__ import annotations

from pathlib import Path

from weakseg.errors import DataError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

IGNORE_INDEX = 255  # VOC "void": boundaries and uncertain pixels


def load_classes(root: str | Path) -> list[str]:
    """Foreground class names of a dataset: `classes.txt` at its root (one per line) or VOC's 20."""
    path = Path(root) / "classes.txt"
    if not path.exists():
        return list(VOC_CLASSES)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate class names")
    if len(names) > 254:
        raise DataError(f"{path}: at most 254 classes fit a VOC label PNG, got {len(names)}")
    return names


def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour map as a flat 768-entry PIL palette (index 255 = void, cream)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette
