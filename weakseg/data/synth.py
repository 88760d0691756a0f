"""`weakseg synth`: a procedural benchmark in exact PASCAL VOC 2012 layout that reproduces the two
problems weakly supervised segmentation has to solve.

1. Partial activation. Every object is a BODY with a small PART on it. The part (a disk covering
   `part_fraction` of the silhouette, placed at a random position fully inside it) carries a
   high-contrast class-specific pattern in a class-specific colour pair; it is the cheapest
   discriminative cue, so a classifier's CAM fires on it. The body carries only weak class evidence:
   a blotch texture whose colour and blotch size are shared by all classes and shifted towards a
   class-specific colour/frequency by `body_strength` (0: identical for all classes; 1: as distinctive
   as the part), plus the class's silhouette family (ellipse, rounded rectangle, triangle, star...).
   A segmentation has to recover the whole body although the classifier only needs the part.

2. Spurious correlation. Every class has a preferred background CONTEXT (train/rails, boat/water...)
   that appears with it with probability `context_prob` (or a per-class `class_context_prob`, so some
   classes are strongly context-correlated and others weakly); otherwise the background is neutral or the
   context of a class that is absent. The context fills the WHOLE background rather than a band:
   this keeps the strength of the cue controlled by one knob (`context_prob`) instead of also by a
   random region size, it puts context pixels next to every object boundary (where CAMs leak, as
   water around a boat), and it matches the context-only OoD images, which are full-frame context
   ("rails without a train"), exactly the hard negatives W-OoD mines.

An optional third knob, `camouflage`, blends each body towards a fresh draw of its image's background texture, so
that colour stops separating object from background (the case a colour CRF cannot handle); it changes pixels only.

Ground truth follows VOC: SegmentationClass (0 background, 1..C classes, 255 void), SegmentationObject
(1..N instance index in drawing order), a void band of `void_width` pixels on each side of every
instance boundary, XML boxes tight around the VISIBLE pixels (1-based inclusive). Later instances
occlude earlier ones; an instance that keeps too little visible area is removed entirely (not drawn,
not labelled), so there are no unlabelled object pixels.

Determinism: image i of a split is drawn from `np.random.default_rng([seed, split_code, i])` alone, so
the output is byte-identical across runs and independent of generation order or worker count.
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import io
import math
import multiprocessing
import os
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from weakseg.data import synth_draw as draw
from weakseg.data.classes import IGNORE_INDEX, voc_palette
from weakseg.errors import WeaksegError
from weakseg.io import atomic_save_png, atomic_write_bytes, atomic_write_json, atomic_write_text

SYNTH_VERSION = 1
SPLIT_CODES = {"train": 0, "val": 1, "ood": 2}
BODY_BASE = (150.0, 126.0, 118.0)  # the shared body colour family (muted taupe)
BODY_CELL = 6.0  # shared body blotch size in pixels at 128 px


@dataclass(frozen=True)
class ClassDesign:
    """How one class looks: silhouette family, part, class-specific body shift, preferred context."""

    name: str
    shape: str
    aspect: tuple[float, float]
    pattern: str
    colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    pattern_angle: float  # degrees, in image orientation (the part pattern does not rotate with the object)
    context: str
    body_colour: tuple[int, int, int] = (0, 0, 0)  # body colour at body_strength = 1
    body_freq: float = 0.0  # log2 blotch-size factor at body_strength = 1

    def to_json(self, label: int, body_strength: float) -> dict[str, Any]:
        col = np.asarray(BODY_BASE) + body_strength * (np.asarray(self.body_colour) - np.asarray(BODY_BASE))
        return {
            "label": label,
            "name": self.name,
            "silhouette": self.shape,
            "aspect": list(self.aspect),
            "part": {
                "pattern": self.pattern,
                "colours": [list(c) for c in self.colours],
                "angle_deg": self.pattern_angle,
                "shape": "disk",
            },
            "body": {
                "shared_colour": list(BODY_BASE),
                "class_colour_at_strength_1": list(self.body_colour),
                "colour": [round(float(v), 2) for v in col],
                "blotch_size_px_at_128": round(BODY_CELL * 2 ** (body_strength * self.body_freq), 3),
            },
            "preferred_context": self.context,
        }


_TABLE = [
    # name     silhouette       aspect       pattern     colour pair                       angle context
    ("train", "round_rect", (1.6, 2.4), "checker", ((215, 30, 35), (250, 215, 30)), 0, "rails"),
    ("boat", "triangle", (1.0, 1.5), "stripes", ((25, 45, 190), (245, 245, 245)), 45, "water"),
    ("bird", "ellipse", (1.3, 1.9), "rings", ((245, 125, 10), (25, 20, 30)), 0, "foliage"),
    ("car", "capsule", (1.7, 2.4), "dots", ((200, 20, 150), (250, 250, 250)), 0, "road"),
    ("cow", "blob", (1.0, 1.4), "pinwheel", ((20, 20, 25), (235, 235, 225)), 0, "grass"),
    ("plane", "cross", (1.0, 1.25), "stripes", ((0, 165, 160), (245, 60, 140)), -45, "sky"),
    ("chair", "diamond", (1.2, 1.7), "zigzag", ((115, 20, 190), (245, 240, 110)), 0, "planks"),
    ("bottle", "star", (1.0, 1.15), "grid", ((150, 230, 20), (20, 30, 120)), 0, "bricks"),
    ("horse", "hexagon", (1.0, 1.4), "checker", ((30, 140, 230), (250, 140, 20)), 30, "sand"),
    ("sheep", "semicircle", (1.0, 1.5), "rings", ((230, 30, 80), (120, 230, 220)), 0, "snow"),
    ("person", "trapezoid", (1.0, 1.6), "dots", ((20, 20, 20), (250, 230, 0)), 0, "tiles"),
    ("dog", "parallelogram", (1.2, 1.8), "pinwheel", ((220, 30, 30), (20, 200, 230)), 0, "gravel"),
]
# Class body colours at strength 1: evenly spaced hues (in an order unrelated to the part colours);
# blotch-size exponents spread over [-1, 1] in another order.
_HUE_ORDER = [0, 5, 10, 3, 8, 1, 6, 11, 4, 9, 2, 7]
_FREQ_ORDER = [3, 9, 0, 6, 11, 2, 8, 5, 1, 10, 4, 7]


def _body_colour(i: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(_HUE_ORDER[i] / 12.0, 0.6, 0.68)
    return (round(r * 255), round(g * 255), round(b * 255))


CLASS_DESIGNS: tuple[ClassDesign, ...] = tuple(
    ClassDesign(name, shape, aspect, pattern, colours, angle, ctx, _body_colour(i), -1.0 + 2.0 * _FREQ_ORDER[i] / 11)
    for i, (name, shape, aspect, pattern, colours, angle, ctx) in enumerate(_TABLE)
)
CONTEXT_NAMES: tuple[str, ...] = tuple(draw.CONTEXTS)


@dataclass
class SynthConfig:
    """Every knob of the generator (all of it is recorded in synth.json)."""

    seed: int = 0
    train: int = 600
    val: int = 150
    ood: int = 200
    classes: int = 8
    size: int = 128
    size_jitter: float = 0.0
    min_size: float = 0.3
    max_size: float = 0.65
    max_instances: int = 4
    max_classes: int = 3
    part_fraction: tuple[float, float] = (0.15, 0.22)
    body_strength: float = 0.3
    camouflage: float = 0.0  # body blended towards a fresh draw of the image's own background texture
    context_prob: float = 0.8
    class_context_prob: tuple[float, ...] = ()  # per class (in class order); empty: context_prob for every class
    neutral_prob: float = 0.5
    min_visible: float = 0.3
    min_pixels: int = 40
    void_width: int = 1
    noise: float = 3.0
    photometric: float = 0.08
    blur: float = 0.35
    ood_context: float = 0.6
    ood_foreground: float = 0.08
    jpeg_quality: int = 95

    def validate(self) -> None:
        """Raise WeaksegError naming the first invalid knob."""

        def bad(msg: str) -> None:
            raise WeaksegError(f"synth: {msg}")

        if not 1 <= self.classes <= len(CLASS_DESIGNS):
            bad(f"--classes must be in 1..{len(CLASS_DESIGNS)}, got {self.classes}")
        for name in ("train", "val", "ood"):
            if getattr(self, name) < 0:
                bad(f"--{name} must be >= 0")
        if self.size < 32:
            bad(f"--size must be >= 32, got {self.size}")
        if not 0 <= self.size_jitter < 0.75:
            bad("--size-jitter must be in [0, 0.75)")
        if not 0.05 <= self.min_size <= self.max_size <= 1.0:
            bad("need 0.05 <= --min-size <= --max-size <= 1")
        if self.max_instances < 1 or self.max_classes < 1:
            bad("--max-instances and --max-classes must be >= 1")
        lo, hi = self.part_fraction
        if not 0.02 <= lo <= hi <= 0.3 or hi - lo < 0.02 - 1e-9:
            bad("--part-fraction LO HI needs 0.02 <= LO <= HI <= 0.3 and HI - LO >= 0.02")
        for name in (
            "body_strength",
            "camouflage",
            "context_prob",
            "neutral_prob",
            "min_visible",
            "ood_context",
            "ood_foreground",
            "blur",
            "photometric",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(f"--{name.replace('_', '-')} must be in [0, 1]")
        if self.class_context_prob and len(self.class_context_prob) != self.classes:
            bad(f"--class-context-prob needs one value per class ({self.classes}), got {len(self.class_context_prob)}")
        if not all(0.0 <= v <= 1.0 for v in self.class_context_prob):
            bad("--class-context-prob values must be in [0, 1]")
        if self.ood_context + self.ood_foreground > 1.0:
            bad("--ood-context + --ood-foreground must be <= 1")
        if self.void_width < 0 or self.min_pixels < 1 or self.noise < 0:
            bad("--void-width >= 0, --min-pixels >= 1, --noise >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            bad("--jpeg-quality must be in 1..100")

    @property
    def designs(self) -> tuple[ClassDesign, ...]:
        return CLASS_DESIGNS[: self.classes]

    @property
    def class_names(self) -> list[str]:
        return [d.name for d in self.designs]

    def context_prob_of(self, cls: int) -> float:
        """Probability that an image showing class index `cls` (0-based) as its drawn class shows its context."""
        return self.class_context_prob[cls] if self.class_context_prob else self.context_prob


@dataclass
class Sample:
    """One rendered image with its ground truth and the generator's own record of it."""

    image: np.ndarray  # HxWx3 uint8
    class_mask: np.ndarray  # HxW uint8: 0 background, 1..C, 255 void
    instance_mask: np.ndarray  # HxW uint8: 0 background, 1..N, 255 void
    objects: list[dict[str, Any]]
    part_mask: np.ndarray  # HxW uint8: instance index where a visible PART pixel is, else 0 (pre-void)
    context: str
    context_matched: bool
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- instances


@dataclass
class _Instance:
    cls: int
    top: int  # image row of the local canvas's row 0
    left: int
    mask: np.ndarray  # local canvas silhouette
    part: np.ndarray  # local canvas part disk
    part_centre: tuple[int, int]
    part_radius: float
    shape_params: dict[str, float]


def _image_size(cfg: SynthConfig, rng: np.random.Generator) -> tuple[int, int]:
    if cfg.size_jitter <= 0:
        return cfg.size, cfg.size
    j = rng.uniform(-cfg.size_jitter, cfg.size_jitter, 2)
    return max(32, round(cfg.size * (1 + j[0]))), max(32, round(cfg.size * (1 + j[1])))


def _make_instance(cfg: SynthConfig, rng: np.random.Generator, cls: int, h: int, w: int) -> _Instance:
    """A silhouette of the class's family with a part disk fully inside it, at a random place."""
    design = CLASS_DESIGNS[cls]
    lo, hi = cfg.part_fraction
    side = min(h, w)
    grow = 1.0
    for attempt in range(40):
        half_len = 0.5 * rng.uniform(cfg.min_size, cfg.max_size) * side * grow
        aspect = rng.uniform(*design.aspect)
        angle = rng.uniform(0, 2 * math.pi)
        cy = rng.uniform(min(0.65 * half_len, h / 2), max(h - 0.65 * half_len, h / 2))
        cx = rng.uniform(min(0.65 * half_len, w / 2), max(w - 0.65 * half_len, w / 2))
        iy, ix = math.floor(cy), math.floor(cx)
        mask = draw.silhouette(design.shape, half_len, aspect, angle, cy - iy - 0.5, cx - ix - 0.5, rng)
        area = int(mask.sum())
        if area < max(cfg.min_pixels, 24):  # too small to carry a part: enlarge (tiny --min-size on tiny images)
            grow *= 1.15
            continue
        target = rng.uniform(lo, hi)
        for _ in range(3):
            radius = math.sqrt(target * area / math.pi)
            for _ in range(30):  # discrete disks: nudge the radius until the pixel fraction is in range
                frac = len(draw.disk_offsets(radius)[0]) / area
                if frac < lo:
                    radius += 0.05
                elif frac > hi and radius > 0.55:
                    radius -= 0.05
                else:
                    break
            if not lo <= frac <= hi:
                break
            centres = draw.disk_centres(mask, radius)
            if len(centres):
                py, px = centres[rng.integers(len(centres))]
                dy, dx = draw.disk_offsets(radius)
                if mask[py + dy, px + dx].all():
                    part = np.zeros_like(mask)
                    part[py + dy, px + dx] = True
                    rad = mask.shape[0] // 2
                    return _Instance(
                        cls,
                        iy - rad,
                        ix - rad,
                        mask,
                        part,
                        (int(py), int(px)),
                        float(radius),
                        {"half_len": float(half_len), "aspect": float(aspect), "angle": float(angle)},
                    )
            target = lo + (target - lo) * 0.4
        if attempt % 4 == 3:
            grow *= 1.1  # tiny images: discrete disks cannot hit the fraction range on very small objects
    raise RuntimeError(f"synth: could not place a part on a {design.shape}")


def _paste_slices(inst: _Instance, h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    n = inst.mask.shape[0]
    y0, x0 = max(inst.top, 0), max(inst.left, 0)
    y1, x1 = min(inst.top + n, h), min(inst.left + n, w)
    img = (slice(y0, max(y1, y0)), slice(x0, max(x1, x0)))
    loc = (slice(y0 - inst.top, max(y1, y0) - inst.top), slice(x0 - inst.left, max(x1, x0) - inst.left))
    return img, loc


def _to_image(inst: _Instance, local: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w), bool)
    img, loc = _paste_slices(inst, h, w)
    out[img] = local[loc]
    return out


def _void_band(inst_map: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` (Chebyshev) of a pixel of another instance/background: VOC's void band."""
    void = np.zeros(inst_map.shape, bool)
    if width <= 0:
        return void
    h, w = inst_map.shape
    p = np.pad(inst_map, width, mode="edge")
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                void |= p[width + dy : width + dy + h, width + dx : width + dx + w] != inst_map
    return void


def _choose_classes(cfg: SynthConfig, rng: np.random.Generator, max_classes: int, max_instances: int) -> list[int]:
    """Class of each instance, in drawing order: 1..max_classes classes (mostly 1-2), 1..max_instances."""
    c = cfg.classes
    kmax = min(max_classes, max_instances, c)
    p = np.array([0.55, 0.33, 0.12, 0.06, 0.03][:kmax] + [0.02] * max(0, kmax - 5))
    k = int(rng.choice(np.arange(1, kmax + 1), p=p / p.sum()))
    present = [int(v) for v in rng.choice(c, k, replace=False)]
    n_vals = np.arange(k, max_instances + 1)
    pn = 0.55 ** (n_vals - k)
    n = int(rng.choice(n_vals, p=pn / pn.sum()))
    classes = present + [int(v) for v in rng.choice(present, n - k)]
    return [classes[i] for i in rng.permutation(n)]


def _layout(
    cfg: SynthConfig, rng: np.random.Generator, h: int, w: int, max_classes: int, max_instances: int
) -> tuple[list[_Instance], list[np.ndarray], int]:
    """Plan instances, resolve occlusion and void; returns kept instances, their visible masks, #dropped."""
    for _ in range(20):
        insts: list[_Instance] = []
        fulls: list[np.ndarray] = []
        for cls in _choose_classes(cfg, rng, max_classes, max_instances):
            for _try in range(8):  # avoid heavy overlaps when possible
                inst = _make_instance(cfg, rng, cls, h, w)
                full = _to_image(inst, inst.mask, h, w)
                if all((full & f).sum() < 0.5 * min(full.sum(), f.sum()) for f in fulls):
                    break
            insts.append(inst)
            fulls.append(full)
        kept = list(range(len(insts)))
        while kept:
            covered = np.zeros((h, w), bool)
            vis: dict[int, np.ndarray] = {}
            for i in reversed(kept):
                vis[i] = fulls[i] & ~covered
                covered |= fulls[i]
            inst_map = np.zeros((h, w), np.uint8)
            for n, i in enumerate(kept, 1):
                inst_map[vis[i]] = n
            void = _void_band(inst_map, cfg.void_width)
            bad = [
                i
                for i in kept
                if vis[i].sum() < max(cfg.min_pixels, cfg.min_visible * insts[i].mask.sum())
                or (vis[i] & ~void).sum() < max(1, cfg.min_pixels // 2)
            ]
            if not bad:
                break
            kept.remove(bad[-1])  # the latest one first: removing it may uncover earlier ones
        if kept:
            return [insts[i] for i in kept], [vis[i] for i in kept], len(insts) - len(kept)
    raise RuntimeError("synth: could not lay out a visible object")  # pragma: no cover


def _choose_context(cfg: SynthConfig, rng: np.random.Generator, present: list[int]) -> tuple[str, bool]:
    """The preferred context of a present class with probability context_prob, else neutral or another's.

    With per-class probabilities the class is drawn first and its own probability decides, so classes with a
    high value are strongly context-correlated and the others weakly (the default path keeps its random stream).
    """
    if cfg.class_context_prob:
        cls = present[int(rng.integers(len(present)))]
        if rng.random() < cfg.class_context_prob[cls]:
            return CLASS_DESIGNS[cls].context, True
    elif rng.random() < cfg.context_prob:
        return CLASS_DESIGNS[present[int(rng.integers(len(present)))]].context, True
    others = [d.context for i, d in enumerate(cfg.designs) if i not in present]
    if rng.random() < cfg.neutral_prob or not others:
        return draw.NEUTRAL_CONTEXTS[int(rng.integers(len(draw.NEUTRAL_CONTEXTS)))], False
    return others[int(rng.integers(len(others)))], False


def _paint_instance(cfg: SynthConfig, rng: np.random.Generator, img: np.ndarray, inst: _Instance, context: str) -> None:
    """Draw body texture and part pattern of one instance over `img` (later instances occlude).

    With `cfg.camouflage` c > 0 the body is (1 - c) x its own texture + c x an independent draw of the image's
    `context` texture: at c = 1 the body has the background's colours and structure (not its pixels), so only the
    part, the silhouette's texture seam and the lighting set the object apart. c = 0 draws nothing extra, so
    benchmarks made without the knob stay byte-identical."""
    design = CLASS_DESIGNS[inst.cls]
    n = inst.mask.shape[0]
    s = cfg.body_strength
    k = min(img.shape[:2]) / 128.0
    colour = np.asarray(BODY_BASE) + s * (np.asarray(design.body_colour, float) - np.asarray(BODY_BASE))
    colour = colour * rng.uniform(0.85, 1.15) + rng.normal(0.0, 12.0, 3)  # per-instance variation
    cell = BODY_CELL * k * 2 ** (s * design.body_freq) * rng.uniform(0.85, 1.15)
    canvas = draw.body_texture(
        rng, n, n, np.clip(colour, 20, 235).astype(np.float32), cell, rng.uniform(0, 2 * math.pi), 0.25
    )
    sl_img, sl_loc = _paste_slices(inst, *img.shape[:2])
    if cfg.camouflage > 0:  # drawn at the image's size, so the texture has the background's scale
        background = draw.draw_context(context, rng, *img.shape[:2])[sl_img]
        canvas[sl_loc] = (1.0 - cfg.camouflage) * canvas[sl_loc] + cfg.camouflage * background
    py, px = inst.part_centre
    dy, dx = np.nonzero(inst.part)
    angle = math.radians(design.pattern_angle + rng.uniform(-12, 12))
    t = draw.part_pattern(design.pattern, dy - py, dx - px, inst.part_radius, angle)
    c0, c1 = (np.asarray(c, np.float32) for c in design.colours)
    canvas[dy, dx] = c0 + t[:, None] * (c1 - c0)
    m = inst.mask[sl_loc]
    img[sl_img][m] = canvas[sl_loc][m]


def _photometric(cfg: SynthConfig, rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    p = cfg.photometric
    gain = (1 + rng.uniform(-p, p)) * (1 + rng.uniform(-p / 2, p / 2, 3))
    contrast = 1 + rng.uniform(-p, p)
    mean = img.mean()
    img = ((img - mean) * contrast + mean) * gain.astype(np.float32)
    if cfg.blur > 0:
        pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        b = 0.25 * pad[:-2] + 0.5 * pad[1:-1] + 0.25 * pad[2:]
        b = 0.25 * b[:, :-2] + 0.5 * b[:, 1:-1] + 0.25 * b[:, 2:]
        img = (1 - cfg.blur) * img + cfg.blur * b
    if cfg.noise > 0:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * cfg.noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_sample_detailed(
    config: SynthConfig, rng: np.random.Generator, max_classes: int | None = None, max_instances: int | None = None
) -> Sample:
    """Render one labelled image (see module docstring); a pure function of config and rng state."""
    cfg = config
    h, w = _image_size(cfg, rng)
    insts, vis, dropped = _layout(cfg, rng, h, w, max_classes or cfg.max_classes, max_instances or cfg.max_instances)
    present = sorted({i.cls for i in insts})
    context, matched = _choose_context(cfg, rng, present)
    img = draw.draw_context(context, rng, h, w)
    for inst in insts:
        _paint_instance(cfg, rng, img, inst, context)
    image = _photometric(cfg, rng, img)

    inst_map = np.zeros((h, w), np.uint8)
    part_map = np.zeros((h, w), np.uint8)
    for n, (inst, v) in enumerate(zip(insts, vis, strict=True), 1):
        inst_map[v] = n
        part_map[v & _to_image(inst, inst.part, h, w)] = n
    labels = np.array([0] + [i.cls + 1 for i in insts], np.uint8)
    class_map = labels[inst_map]
    void = _void_band(inst_map, cfg.void_width)
    class_map[void] = IGNORE_INDEX
    inst_map_out = inst_map.copy()
    inst_map_out[void] = IGNORE_INDEX

    objects = []
    for n, (inst, v) in enumerate(zip(insts, vis, strict=True), 1):
        rows, cols = np.nonzero(v.any(1))[0], np.nonzero(v.any(0))[0]
        full_area = int(inst.mask.sum())
        in_frame = int(_to_image(inst, inst.mask, h, w).sum())
        part_area = int(inst.part.sum())
        objects.append(
            {
                "instance": n,
                "label": inst.cls + 1,
                "name": CLASS_DESIGNS[inst.cls].name,
                "bbox": [int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1],
                "silhouette": CLASS_DESIGNS[inst.cls].shape,
                "area": full_area,
                "visible_area": int(v.sum()),
                "visible_fraction": round(int(v.sum()) / full_area, 4),
                "truncated": in_frame < full_area,
                "occluded": int(v.sum()) < in_frame,
                "part_fraction": round(part_area / full_area, 4),
                "part_visible_fraction": round(int((part_map == n).sum()) / part_area, 4),
                **{k: round(val, 3) for k, val in inst.shape_params.items()},
            }
        )
    meta = {
        "size": [h, w],
        "classes": [CLASS_DESIGNS[c].name for c in present],
        "labels": [c + 1 for c in present],
        "context": context,
        "context_index": CONTEXT_NAMES.index(context),
        "context_matched": matched,
        "dropped_occluded": dropped,
        "objects": objects,
    }
    return Sample(image, class_map, inst_map_out, objects, part_map, context, matched, meta)


def render_sample(
    config: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """(image HxWx3 uint8, class mask, instance mask, objects) of one labelled image."""
    s = render_sample_detailed(config, rng)
    return s.image, s.class_mask, s.instance_mask, s.objects


def render_ood(config: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """One OoD pool image: a class's context alone, an unrelated background, or (label noise) an object."""
    cfg = config
    u = rng.random()
    if u < cfg.ood_context + cfg.ood_foreground and u >= cfg.ood_context:
        s = render_sample_detailed(cfg, rng, max_classes=1, max_instances=2)
        meta = dict(s.meta, kind="foreground", contains_foreground=True)
        return s.image, meta
    h, w = _image_size(cfg, rng)
    if u < cfg.ood_context:
        cls = int(rng.integers(cfg.classes))
        context, kind, of = CLASS_DESIGNS[cls].context, "context", CLASS_DESIGNS[cls].name
    else:
        pool = (
            list(draw.NEUTRAL_CONTEXTS) + list(draw.NOVEL_CONTEXTS) + [d.context for d in CLASS_DESIGNS[cfg.classes :]]
        )
        context, kind, of = pool[int(rng.integers(len(pool)))], "unrelated", None
    img = _photometric(cfg, rng, draw.draw_context(context, rng, h, w))
    meta = {
        "size": [h, w],
        "kind": kind,
        "contains_foreground": False,
        "classes": [],
        "labels": [],
        "context": context,
        "context_index": CONTEXT_NAMES.index(context),
        "context_of_class": of,
        "objects": [],
    }
    return img, meta


# ----------------------------------------------------------------------------- files


def voc_xml(image_id: str, h: int, w: int, objects: list[dict[str, Any]], folder: str = "VOC2012") -> str:
    """A standard VOC annotation XML for one image (boxes 1-based inclusive)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "weakseg synth"
    size = ET.SubElement(root, "size")
    for tag, val in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(val)
    ET.SubElement(root, "segmented").text = "1"
    for o in objects:
        ob = ET.SubElement(root, "object")
        ET.SubElement(ob, "name").text = o["name"]
        ET.SubElement(ob, "pose").text = "Unspecified"
        ET.SubElement(ob, "truncated").text = "1" if o["truncated"] else "0"
        ET.SubElement(ob, "difficult").text = "0"
        box = ET.SubElement(ob, "bndbox")
        for tag, val in zip(("xmin", "ymin", "xmax", "ymax"), o["bbox"], strict=True):
            ET.SubElement(box, tag).text = str(val)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _item(args: tuple[SynthConfig, str, str, int, str]) -> tuple[str, str, dict[str, Any]]:
    """Render and write one image (runs in a worker process when --workers > 1)."""
    cfg, out, split, index, image_id = args
    out_dir = Path(out)
    rng = np.random.default_rng([cfg.seed, SPLIT_CODES[split], index])
    if split == "ood":
        image, meta = render_ood(cfg, rng)
        atomic_write_bytes(out_dir / "OoD" / "JPEGImages" / f"{image_id}.jpg", _jpeg(image, cfg.jpeg_quality))
        return split, image_id, meta
    s = render_sample_detailed(cfg, rng)
    h, w = s.class_mask.shape
    palette = voc_palette()
    atomic_write_bytes(out_dir / "JPEGImages" / f"{image_id}.jpg", _jpeg(s.image, cfg.jpeg_quality))
    atomic_save_png(out_dir / "SegmentationClass" / f"{image_id}.png", s.class_mask, palette)
    atomic_save_png(out_dir / "SegmentationObject" / f"{image_id}.png", s.instance_mask, palette)
    atomic_write_text(out_dir / "Annotations" / f"{image_id}.xml", voc_xml(image_id, h, w, s.objects))
    return split, image_id, dict(s.meta, split=split)


LAYOUT_ENTRIES = frozenset(
    {
        "JPEGImages",
        "SegmentationClass",
        "SegmentationObject",
        "Annotations",
        "ImageSets",
        "OoD",
        "classes.txt",
        "synth.json",
    }
)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise WeaksegError(f"synth: {out} exists and is not a folder")
    if out.is_dir():
        entries = [e for e in out.iterdir() if not e.name.startswith(".")]
        if entries:
            foreign = sorted(e.name for e in entries if e.name not in LAYOUT_ENTRIES)
            if not overwrite:
                raise WeaksegError(f"synth: {out} is not empty; pass --overwrite to replace a previous benchmark")
            if foreign:
                raise WeaksegError(
                    f"synth: {out} holds files that are not a synth benchmark ({', '.join(foreign[:3])}); "
                    "refusing to overwrite"
                )
            for e in entries:
                if e.is_dir():
                    shutil.rmtree(e)
                else:
                    e.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(
    config: SynthConfig, out_dir: str | os.PathLike, progress: bool = True, workers: int = 1, overwrite: bool = False
) -> dict[str, Any]:
    """Write the benchmark to out_dir (a VOC2012-like folder) and return a summary dict."""
    cfg = config
    cfg.validate()
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    t0 = time.perf_counter()
    jobs = [(cfg, str(out), "train", i, f"s_{i:06d}") for i in range(cfg.train)]
    jobs += [(cfg, str(out), "val", i, f"s_{cfg.train + i:06d}") for i in range(cfg.val)]
    jobs += [(cfg, str(out), "ood", i, f"ood_{i:06d}") for i in range(cfg.ood)]
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="synth", unit="img", delay=2.0, disable=not progress)
    results: list[tuple[str, str, dict[str, Any]]] = []
    try:
        if workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for r in pool.imap(_item, jobs, chunksize=8):
                    results.append(r)
                    bar.update()
        else:
            for job in jobs:
                results.append(_item(job))
                bar.update()
    finally:
        bar.close()

    names = cfg.class_names
    ids = {s: [i for sp, i, _ in results if sp == s] for s in SPLIT_CODES}
    meta = {i: m for _, i, m in results}
    seg = out / "ImageSets" / "Segmentation"
    main = out / "ImageSets" / "Main"
    for split, lst in (("train", ids["train"]), ("val", ids["val"]), ("trainval", ids["train"] + ids["val"])):
        text = "".join(f"{i}\n" for i in lst)
        atomic_write_text(seg / f"{split}.txt", text)
        atomic_write_text(main / f"{split}.txt", text)
        for c, name in enumerate(names, 1):
            atomic_write_text(
                main / f"{name}_{split}.txt", "".join(f"{i} {1 if c in meta[i]['labels'] else -1:2d}\n" for i in lst)
            )
    atomic_write_text(out / "classes.txt", "".join(f"{n}\n" for n in names))
    atomic_write_text(out / "OoD" / "ImageSets" / "pool.txt", "".join(f"{i}\n" for i in ids["ood"]))
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["id", "contains_foreground", "classes"])
    for i in ids["ood"]:
        wr.writerow([i, int(meta[i]["contains_foreground"]), ";".join(meta[i]["classes"])])
    atomic_write_text(out / "OoD" / "truth.csv", buf.getvalue())

    labelled = ids["train"] + ids["val"]
    n_obj = sum(len(meta[i]["objects"]) for i in labelled)
    matched = sum(meta[i]["context_matched"] for i in labelled)
    ood_kinds = {k: sum(meta[i]["kind"] == k for i in ids["ood"]) for k in ("context", "unrelated", "foreground")}
    record = {
        "generator": "weakseg.data.synth",
        "version": SYNTH_VERSION,
        "config": dataclasses.asdict(cfg),
        "classes": [
            {**d.to_json(c, cfg.body_strength), "context_prob": cfg.context_prob_of(c - 1)}
            for c, d in enumerate(cfg.designs, 1)
        ],
        "contexts": [
            {
                "index": i,
                "name": n,
                "description": draw.CONTEXTS[n][1],
                "preferred_by": next((d.name for d in cfg.designs if d.context == n), None),
            }
            for i, n in enumerate(CONTEXT_NAMES)
        ],
        "splits": {"train": ids["train"], "val": ids["val"], "ood": ids["ood"]},
        "images": {i: meta[i] for i in labelled},
        "ood": {i: meta[i] for i in ids["ood"]},
    }
    atomic_write_json(out / "synth.json", record)  # written last: its presence marks a complete benchmark
    elapsed = time.perf_counter() - t0
    return {
        "out": str(out),
        "train": len(ids["train"]),
        "val": len(ids["val"]),
        "ood": len(ids["ood"]),
        "classes": names,
        "objects": n_obj,
        "objects_per_image": round(n_obj / max(1, len(labelled)), 3),
        "context_matched_fraction": round(matched / max(1, len(labelled)), 4),
        "dropped_occluded": sum(meta[i]["dropped_occluded"] for i in labelled),
        "ood_kinds": ood_kinds,
        "seconds": round(elapsed, 2),
    }
