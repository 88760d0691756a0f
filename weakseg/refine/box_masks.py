"""Pseudo masks from box targets: BBAM maps -> dense CRF -> instance masks and a semantic label; and the two baselines
the dissertation argues against (filled boxes, GrabCut inside the box) through the same output.

Per box and map, with threshold th (the authors' get_top_CRF, tools/BBAM/make_annotation/anno_utils.py):
1. the map is cut to the box and min-max normalised inside it;
2. divided by its value at rank floor(area * (1 - th)) of the box's pixels (descending) and clipped to 1, so the top
   (1 - th) of the box saturates: th = 0.85 keeps the peak 15 % sure, th = 0.2 the top 80 %;
3. Gaussian-blurred, window 2k+1 and sigma k for k = int(16 + 48 sqrt(box area / image area)), cut to the box again
   and divided by its maximum;
4. a 2-label dense CRF on (m, 1 - m) with the authors' kernels (10 iterations, Gaussian sxy 1 compat 3, bilateral
   sxy 80 srgb 3 compat 4); foreground where Q_fg > 0.9, cut to the box (theirs is not cut, but outside the box
   m = 0, whose unary, -log(1e-5) = 11.5, the normalised pairwise terms, weights 3 + 4, cannot overturn).
Fallbacks (theirs): a mask over at most a fifth of its box, when the box covers at most a tenth of the image, is
grown by CRFs started from the box prior p in (0.7, 0.8, 0.9, 0.95, 0.96) inside the box (the mask's pixels at 1),
taking the first result over a third of the box (else the last). A map that is zero in the box (no positive
proposals) gets CRFs from the box prior p in (0.7, 0.8, 0.9, 0.95) alone, the first over a fifth of the box; when
none is, the filled box (theirs then drops the box).

Instance masks are the tight ones (th_fg 0.85); the loose ones (th_loose 0.2) mark the ignore band of the semantic
label. The semantic label follows their create_semantic_labels.py: each class' union of tight masks; pixels claimed by
two or more classes are ignored (255); then every box lying entirely inside another box writes its class over its
tight mask, larger boxes first (so the smaller, inner object ends on top); finally every pixel in some box's loose
mask but not in its tight one is ignored (255). The baselines have no band (tight = loose).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from weakseg.data.box_targets import BoxError, box_region, box_slices, check_box_targets
from weakseg.refine.crf import CRFConfig, crf_probs

IGNORE = 255
# The authors' DenseCRF for box masks (anno_utils.DenseCRF(iter_max=10, pos_xy_std=1, pos_w=3, bi_xy_std=80,
# bi_rgb_std=3, bi_w=4)); gt_prob is unused by crf_probs.
BOX_CRF = CRFConfig(iters=10, sxy_gaussian=1.0, compat_gaussian=3.0, sxy_bilateral=80.0, srgb=3.0, compat_bilateral=4.0)


@dataclass(frozen=True)
class BoxMaskConfig:
    """Thresholds, blur, CRF and fallbacks of the BBAM pseudo masks (the authors' values)."""

    th_fg: float = field(default=0.85, metadata={"help": "tight mask: the top (1 - th) of the box saturates"})
    th_loose: float = field(default=0.2, metadata={"help": "loose mask (ignore band up to it): same rule"})
    q_threshold: float = field(default=0.9, metadata={"help": "foreground where the CRF's Q_fg exceeds this"})
    blur: bool = field(default=True, metadata={"help": "Gaussian-blur the saturated map before the CRF"})
    blur_base: float = field(default=16.0, metadata={"help": "blur half-window k = base + scale sqrt(area ratio)"})
    blur_scale: float = field(default=48.0, metadata={"help": "blur half-window slope in sqrt(box/image area)"})
    crf: CRFConfig = BOX_CRF
    small_fraction: float = field(default=0.2, metadata={"help": "a mask over at most this of its box is grown"})
    large_box: float = field(default=0.1, metadata={"help": "boxes over this fraction of the image are not grown"})
    grow_priors: tuple[float, ...] = (0.7, 0.8, 0.9, 0.95, 0.96)
    grow_accept: float = field(default=1 / 3, metadata={"help": "a grown mask is taken once over this of its box"})
    empty_priors: tuple[float, ...] = (0.7, 0.8, 0.9, 0.95)
    empty_accept: float = field(default=0.2, metadata={"help": "box-prior mask of an empty map: accept over this"})

    def __post_init__(self) -> None:
        if not (0 <= self.th_fg < 1 and 0 <= self.th_loose < 1 and 0 < self.q_threshold < 1):
            raise ValueError("th_fg and th_loose must be in [0, 1), q_threshold in (0, 1)")
        if self.th_loose > self.th_fg:
            raise ValueError(
                f"th_loose ({self.th_loose}) must not exceed th_fg ({self.th_fg}): it marks the wider mask"
            )


@dataclass(frozen=True)
class BoxMasks:
    """Per box: the instance (tight) mask, the loose mask, its class and how it was made; and the semantic label."""

    instances: np.ndarray  # [B, H, W] bool
    loose: np.ndarray  # [B, H, W] bool
    labels: np.ndarray  # [B] int64, 1-based class ids
    semantic: np.ndarray  # [H, W] uint8: 0 background, class ids, 255 ignored
    sources: tuple[str, ...]  # per box: map | grown | box-prior | box | grabcut


def bbam_masks(
    image: np.ndarray,
    maps: torch.Tensor | np.ndarray,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
    config: BoxMaskConfig | None = None,
) -> BoxMasks:
    """Instance and semantic pseudo masks of one image (uint8 HxWx3) from its BBAM maps [B, H, W]."""
    config = config or BoxMaskConfig()
    image, rows, ids = _check(image, boxes, labels)
    maps = np.asarray(torch.as_tensor(maps).detach().cpu().numpy(), dtype=np.float64)
    if maps.shape != (len(rows), *image.shape[:2]):
        raise ValueError(f"maps must be [B, H, W] = {(len(rows), *image.shape[:2])}, got {maps.shape}")
    tight, loose, sources = [], [], []
    for box, m in zip(rows, maps, strict=True):
        t, source = mask_from_map(image, m, box, config.th_fg, config)
        lo, _ = mask_from_map(image, m, box, config.th_loose, config)
        tight.append(t)
        loose.append(lo | t)
        sources.append(source)
    return _assemble(np.stack(tight), np.stack(loose), rows, ids, tuple(sources))


def mask_from_map(
    image: np.ndarray, attribution: np.ndarray, box: Sequence[float], th: float, config: BoxMaskConfig
) -> tuple[np.ndarray, str]:
    """One box's foreground mask (bool HxW) from its map at threshold th, and its source (module docstring)."""
    h, w = image.shape[:2]
    region = box_region(box, h, w)
    area = int(region.sum())
    inside = attribution[region]
    if inside.size == 0 or not inside.max() > 0:
        return _empty_map_mask(image, region, area, config)
    lo, hi = float(inside.min()), float(inside.max())
    m = np.zeros((h, w), dtype=np.float64)
    m[region] = (inside - lo) / (hi - lo) if hi > lo else 1.0
    ranked = np.sort(m[region])[::-1]
    threshold = ranked[min(int(area * (1 - th)), len(ranked) - 1)] + 1e-8
    m = np.clip(m / threshold, 0, 1)
    if config.blur:
        import cv2

        k = int(config.blur_base + config.blur_scale * math.sqrt(area / (h * w)))
        m = cv2.GaussianBlur(m, (2 * k + 1, 2 * k + 1), k) * region
    if m.max() > 0:
        m = m / m.max()
    mask = _crf_foreground(image, m, region, config)
    if mask.sum() > area * config.small_fraction or area / (h * w) > config.large_box:
        return mask, "map"
    grown = mask
    for prior in config.grow_priors:
        start = np.where(region, prior, 0.0)
        start[mask] = 1.0
        grown = _crf_foreground(image, start, region, config)
        if grown.sum() > area * config.grow_accept:
            break
    return grown, "grown"


def filled_box_masks(
    image: np.ndarray,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
) -> BoxMasks:
    """The filled-box baseline: every box's pixels are its mask (no ignore band)."""
    image, rows, ids = _check(image, boxes, labels)
    h, w = image.shape[:2]
    masks = np.stack([box_region(b, h, w) for b in rows])
    return _assemble(masks, masks.copy(), rows, ids, ("box",) * len(rows))


def grabcut_masks(
    image: np.ndarray,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
    iterations: int = 5,
    seed: int = 0,
) -> BoxMasks:
    """The GrabCut baseline: OpenCV's GrabCut initialised with each box (sure and probable foreground), seeded; the
    filled box where GrabCut fails or finds nothing (no ignore band)."""
    import cv2

    image, rows, ids = _check(image, boxes, labels)
    h, w = image.shape[:2]
    masks, sources = [], []
    for box in rows:
        ys, xs = box_slices(box, h, w)
        rect = (xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        state = np.zeros((h, w), dtype=np.uint8)
        cv2.setRNGSeed(int(seed))
        try:
            labelled, _, _ = cv2.grabCut(
                image, state, rect, np.zeros((1, 65)), np.zeros((1, 65)), int(iterations), cv2.GC_INIT_WITH_RECT
            )
            fg = (np.asarray(labelled) == cv2.GC_FGD) | (np.asarray(labelled) == cv2.GC_PR_FGD)
        except cv2.error:
            fg = np.zeros((h, w), dtype=bool)
        fg &= box_region(box, h, w)
        if fg.any():
            masks.append(fg)
            sources.append("grabcut")
        else:
            masks.append(box_region(box, h, w))
            sources.append("box")
    stacked = np.stack(masks)
    return _assemble(stacked, stacked.copy(), rows, ids, tuple(sources))


def semantic_label(
    instances: np.ndarray, loose: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]], labels: Sequence[int]
) -> np.ndarray:
    """uint8 HxW label from tight and loose instance masks (the authors' aggregation, module docstring)."""
    instances, loose = np.asarray(instances, dtype=bool), np.asarray(loose, dtype=bool)
    rows = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ids = [int(v) for v in labels]
    h, w = instances.shape[1:]
    classes = sorted(set(ids))
    claimed = {c: np.zeros((h, w), dtype=bool) for c in classes}
    for mask, c in zip(instances, ids, strict=True):
        claimed[c] |= mask
    out = np.zeros((h, w), dtype=np.uint8)
    for c in classes:
        out[claimed[c]] = c
    if classes:
        out[np.sum([claimed[c] for c in classes], axis=0) > 1] = IGNORE
    areas = (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])
    for i in np.argsort(-areas, kind="stable"):
        if _inside_another(i, rows):
            out[instances[i]] = ids[i]
    out[np.any(loose & ~instances, axis=0)] = IGNORE
    return out


def _inside_another(i: int, rows: np.ndarray) -> bool:
    """Box i lies within some other, different box (edges may touch)."""
    x1, y1, x2, y2 = rows[i]
    for j, other in enumerate(rows):
        if j != i and not np.array_equal(other, rows[i]):
            if other[0] <= x1 and other[1] <= y1 and other[2] >= x2 and other[3] >= y2:
                return True
    return False


def _crf_foreground(image: np.ndarray, fg_prob: np.ndarray, region: np.ndarray, config: BoxMaskConfig) -> np.ndarray:
    q = crf_probs(image, np.stack([fg_prob, 1 - fg_prob]).astype(np.float32), config.crf)
    return (q[0] > config.q_threshold) & region


def _empty_map_mask(image: np.ndarray, region: np.ndarray, area: int, config: BoxMaskConfig) -> tuple[np.ndarray, str]:
    for prior in config.empty_priors:
        mask = _crf_foreground(image, np.where(region, prior, 0.0), region, config)
        if mask.sum() > area * config.empty_accept:
            return mask, "box-prior"
    return region.copy(), "box"


def _check(
    image: np.ndarray,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"box masks take a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    check_box_targets(boxes, labels, image.shape[0], image.shape[1])
    rows = np.asarray(torch.as_tensor(boxes, dtype=torch.float64).cpu().numpy()).reshape(-1, 4)
    ids = np.asarray(torch.as_tensor(labels).cpu().numpy()).astype(np.int64)
    for i, c in enumerate(ids):
        if not 1 <= c < IGNORE:
            raise BoxError(f"box {i}: class id {c} cannot be written in a label (need 1..{IGNORE - 1})")
    return np.ascontiguousarray(image), rows, ids


def _assemble(
    tight: np.ndarray, loose: np.ndarray, rows: np.ndarray, ids: np.ndarray, sources: tuple[str, ...]
) -> BoxMasks:
    return BoxMasks(
        instances=tight,
        loose=loose,
        labels=ids,
        semantic=semantic_label(tight, loose, rows, ids.tolist()),
        sources=sources,
    )
