"""Box targets of one image (boxes and their class ids) as BBAM and the box pseudo masks take them, and their checks.

Boxes are float xyxy in 0-based pixel-edge coordinates: a box covering the pixel columns i..j (inclusive, 0-based)
is x1 = i, x2 = j + 1, so 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H for a box inside a W x H image (a VOC box, 1-based
inclusive, is (xmin - 1, ymin - 1, xmax, ymax)). Class ids follow torchvision's detectors: 0 is the background,
1..C-1 the classes. The pixels of a box are the rows floor(y1)..ceil(y2)-1 and columns floor(x1)..ceil(x2)-1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from weakseg.errors import WeaksegError

MIN_SIDE = 1.0  # a box narrower or lower than one pixel is degenerate


class BoxError(WeaksegError, ValueError):
    """A box target that cannot be used (outside the image, degenerate, an unknown class, no boxes at all)."""


def _rows(boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    return np.asarray(torch.as_tensor(boxes, dtype=torch.float64).cpu().numpy(), dtype=np.float64)


def describe_box(index: int, box: Sequence[float]) -> str:
    """'box 2 (x1, y1, x2, y2)': how messages name a box (the CLI adds the file)."""
    return f"box {index} ({', '.join(f'{float(v):g}' for v in box)})"


def check_box_targets(
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
    height: int,
    width: int,
    num_classes: int | None = None,
) -> None:
    """BoxError naming the first unusable box: none given, not [B,4], not finite, outside the height x width image,
    narrower or lower than a pixel, or (num_classes = the detector's, background included) a class id not in
    1..num_classes-1."""
    rows = _rows(boxes)
    ids = np.asarray(torch.as_tensor(labels).cpu().numpy())
    if rows.size == 0:
        raise BoxError("the image has no boxes")
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise BoxError(f"boxes must be [B, 4] (x1, y1, x2, y2), got shape {tuple(rows.shape)}")
    if ids.ndim != 1 or len(ids) != len(rows):
        raise BoxError(f"{len(rows)} boxes but labels of shape {tuple(ids.shape)}")
    for i, (box, label) in enumerate(zip(rows, ids, strict=True)):
        name = describe_box(i, box)
        if not np.all(np.isfinite(box)):
            raise BoxError(f"{name}: coordinates are not finite")
        x1, y1, x2, y2 = box
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise BoxError(f"{name}: extends outside the {width}x{height} image")
        if x2 - x1 < MIN_SIDE or y2 - y1 < MIN_SIDE:
            raise BoxError(f"{name}: empty or degenerate (width {x2 - x1:g}, height {y2 - y1:g}; need >= 1 pixel)")
        if not float(label).is_integer():
            raise BoxError(f"{name}: class id {label} is not an integer")
        if num_classes is not None and not 1 <= int(label) < num_classes:
            raise BoxError(
                f"{name}: class id {int(label)} is not in the detector (classes 1..{num_classes - 1}, 0 = background)"
            )


def box_slices(box: Sequence[float], height: int, width: int) -> tuple[slice, slice]:
    """(rows, columns) of the pixels a box covers, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    r0, r1 = max(0, math.floor(y1)), min(height, math.ceil(y2))
    c0, c1 = max(0, math.floor(x1)), min(width, math.ceil(x2))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def box_region(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Boolean HxW mask of the pixels a box covers."""
    region = np.zeros((height, width), dtype=bool)
    region[box_slices(box, height, width)] = True
    return region
