"""Visualisations for reports: coloured labels, heatmap and mask overlays, and captioned image grids."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from weakseg.data.classes import voc_palette


@lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    """VOC palette as uint8[256,3] (255 = void, cream)."""
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


def _check_image(image: np.ndarray) -> np.ndarray:
    """Validate a uint8 HxWx3 image."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    return image


def _blend(image: np.ndarray, colour: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """(1-alpha)*image + alpha*colour, rounded to uint8."""
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def colorize_label(label: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 VOC colours of a uint8 HxW label (255 = void drawn cream (224,224,192))."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be HxW, got shape {label.shape}")
    return _palette()[label.astype(np.uint8)]


def heatmap_overlay(image: np.ndarray, map01: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a [0,1] HxW map, coloured with a matplotlib colormap, over a uint8 HxWx3 image."""
    image = _check_image(image)
    map01 = np.asarray(map01, dtype=np.float32)
    if map01.shape != image.shape[:2]:
        raise ValueError(f"map is {map01.shape} but image is {image.shape[:2]}")
    rgba = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(map01), 0.0, 1.0), bytes=True)
    return _blend(image, rgba[..., :3], alpha)


def mask_overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend VOC label colours over a uint8 HxWx3 image on non-background pixels (background 0 is left as is)."""
    image = _check_image(image)
    label = np.asarray(label)
    if label.shape != image.shape[:2]:
        raise ValueError(f"label is {label.shape} but image is {image.shape[:2]}")
    a = np.where(label[..., None] != 0, np.float32(alpha), np.float32(0.0))
    return _blend(image, colorize_label(label), a)


def _as_rgb(cell: np.ndarray) -> np.ndarray:
    """A grid cell as uint8 HxWx3 (HxW uint8 is shown as grey)."""
    cell = np.asarray(cell)
    if cell.dtype != np.uint8 or cell.ndim not in (2, 3) or (cell.ndim == 3 and cell.shape[2] != 3):
        raise ValueError(f"tile cells must be uint8 HxW or HxWx3, got {cell.dtype} {cell.shape}")
    return np.repeat(cell[..., None], 3, axis=2) if cell.ndim == 2 else cell


def _fit(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str, width: int) -> str:
    """Shorten text with an ellipsis until it fits width pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def tile(
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str] | Sequence[Sequence[str]] | None = None,
    pad: int = 4,
) -> np.ndarray:
    """Grid figure from rows of uint8 images (e.g. image | GT | CAM | seed | CRF) on white, with optional captions.

    `captions` is either one string per column (headers drawn once above the grid) or one list of
    strings per row (drawn above each cell). Cells may differ in size; each column/row takes its largest.
    """
    grid = [[_as_rgb(c) for c in row] for row in rows]
    if not grid or not any(grid):
        raise ValueError("tile needs at least one image")
    ncols = max(len(r) for r in grid)
    col_w = [max((r[j].shape[1] for r in grid if j < len(r)), default=0) for j in range(ncols)]
    row_h = [max(c.shape[0] for c in r) if r else 0 for r in grid]

    header_caps: list[str] = []  # one per column
    cell_caps: list[list[str]] = []  # one list per row
    if captions:
        if isinstance(captions[0], str):
            header_caps = [str(c) for c in captions]
        else:
            cell_caps = [[str(c) for c in row] for row in captions]
    per_cell, headers = bool(cell_caps), bool(header_caps)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    box = probe.textbbox((0, 0), "Ag|", font=font)
    top, bottom = int(box[1]), int(box[3])  # whole pixels for the default font
    text_h = (bottom - top) + 2 if captions else 0
    cap_h = text_h if per_cell else 0

    width = pad + sum(w + pad for w in col_w)
    height = pad + (text_h + pad if headers else 0) + sum(h + cap_h + pad for h in row_h)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    xs = np.cumsum([pad] + [w + pad for w in col_w])[:-1]

    texts: list[tuple[int, int, str, int]] = []  # (x, y, text, max width)
    y = pad
    if headers:
        texts += [(int(xs[j]), y - top, header_caps[j], col_w[j]) for j in range(min(ncols, len(header_caps)))]
        y += text_h + pad
    for i, row in enumerate(grid):
        for j, cell in enumerate(row):
            if per_cell and i < len(cell_caps) and j < len(cell_caps[i]):
                texts.append((int(xs[j]), y - top, cell_caps[i][j], col_w[j]))
            h, w = cell.shape[:2]
            canvas[y + cap_h : y + cap_h + h, xs[j] : xs[j] + w] = cell
        y += row_h[i] + cap_h + pad

    if texts:
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        for x, ty, text, max_w in texts:
            draw.text((x, ty), _fit(draw, font, text, max_w), fill=(0, 0, 0), font=font)
        canvas = np.asarray(img, dtype=np.uint8).copy()
    return canvas
