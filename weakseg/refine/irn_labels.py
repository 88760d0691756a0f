"""IRN's inter-pixel affinity labels from confident seeds (the authors' `voc12/dataloader.py`:
`GetAffinityLabelFromIndices`, `VOC12AffinityDataset`; `misc/indexing.py`: `PathIndex`).

The ir label is the CAM seed with confident foreground (maps > 0.30), confident background (all maps < 0.05)
and 255 in between, both thresholded maps refined by the dense CRF (`refine_seed_label`, IRN's cam_to_ir_label).
For training it is cropped with the image, then reduced to stride 4 the authors' way: cv2.resize with fx = fy =
0.25 and INTER_NEAREST picks source pixel floor(4 i), i.e. label[::4, ::4].

Pairs join a source pixel p to p + o for IRN's half-plane directions o within the radius (10 in training: 152
directions, `neighbour_offsets(10)`). As PathIndex, only sources in the window rows [0, h - r + 1) and columns
[r - 1, w - r + 1) are paired, so every destination lies inside the crop. A pair is valid when neither end is
255; valid pairs of equal labels are positive (background when the label is 0, foreground otherwise), valid
pairs of different labels negative. Labels are laid out [D,h,w] by source pixel, as `path_affinity`'s output.
"""

from __future__ import annotations

import numpy as np

from weakseg.data.classes import IGNORE_INDEX
from weakseg.refine.crf import CRFConfig
from weakseg.refine.random_walk import neighbour_offsets
from weakseg.refine.seed_label import refine_seed_label

TRAIN_RADIUS = 10  # the authors' PathIndex radius for training
LABEL_STRIDE = 4
IRN_CRF = CRFConfig()  # cam_to_ir_label's CRF (imutils.crf_inference_label's parameters)


def ir_label(
    image: np.ndarray,
    maps: np.ndarray,
    class_ids: np.ndarray,
    fg_thresh: float = 0.30,
    bg_thresh: float = 0.05,
    crf: CRFConfig | None = IRN_CRF,
) -> np.ndarray:
    """IRN's confident-region label uint8 HxW (class ids, 0 background, 255 unsure), CRF-refined unless crf=None."""
    return refine_seed_label(image, maps, class_ids, fg_thresh, bg_thresh, crf)


def reduce_label(label: np.ndarray) -> np.ndarray:
    """The label at stride 4 the authors' way (cv2 INTER_NEAREST at fx = 0.25 takes pixel 4i): label[::4, ::4]."""
    return np.ascontiguousarray(np.asarray(label)[::LABEL_STRIDE, ::LABEL_STRIDE])


def pair_window(h: int, w: int, radius: int = TRAIN_RADIUS) -> np.ndarray:
    """bool [h,w]: the source pixels PathIndex pairs (rows < h - r + 1, r - 1 <= column < w - r + 1)."""
    rf = radius - 1
    window = np.zeros((h, w), dtype=bool)
    if h > rf and w > 2 * rf:
        window[: h - rf, rf : w - rf] = True
    return window


def affinity_labels(label: np.ndarray, radius: int = TRAIN_RADIUS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bg_pos, fg_pos, neg), float32 [D,h,w] each: 1 where the pair (p, p + offset_d) is in that set."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be [h,w], got shape {label.shape}")
    h, w = label.shape
    offsets = neighbour_offsets(radius)
    rf = radius - 1
    src = label.astype(np.int64)
    window = pair_window(h, w, radius)
    padded = np.full((h + rf, w + 2 * rf), IGNORE_INDEX, dtype=np.int64)
    padded[:h, rf : rf + w] = src
    shape = (len(offsets), h, w)
    bg_pos, fg_pos, neg = np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for d, (dy, dx) in enumerate(offsets):
        dst = padded[dy : dy + h, rf + dx : rf + dx + w]
        valid = window & (src != IGNORE_INDEX) & (dst != IGNORE_INDEX)
        equal = src == dst
        bg_pos[d] = valid & equal & (src == 0)
        fg_pos[d] = valid & equal & (src > 0)
        neg[d] = valid & ~equal
    return bg_pos, fg_pos, neg


LOW_CONFIDENT_FRACTION = 0.05  # below this share of pixels, a confident set gives IRN few pairs to learn from


def label_fractions(labels: list[np.ndarray]) -> dict[str, float]:
    """Shares of all pixels of ir labels that are confident foreground, confident background and unsure (255)."""
    total = sum(int(label.size) for label in labels)
    if not total:
        return {"confident_fg": 0.0, "confident_bg": 0.0, "unsure": 0.0}
    bg = sum(int((label == 0).sum()) for label in labels)
    unsure = sum(int((label == IGNORE_INDEX).sum()) for label in labels)
    return {"confident_fg": (total - bg - unsure) / total, "confident_bg": bg / total, "unsure": unsure / total}


def fraction_warnings(fractions: dict[str, float], fg_thresh: float, bg_thresh: float) -> list[str]:
    """One line per confident set too small to train on, naming the threshold to move."""
    out = []
    if fractions["confident_bg"] < LOW_CONFIDENT_FRACTION:
        out.append(
            f"only {100 * fractions['confident_bg']:.1f} % of pixels are confident background (every map below "
            f"--bg-thresh {bg_thresh}); the maps' background floor is higher: raise --bg-thresh"
        )
    if fractions["confident_fg"] < LOW_CONFIDENT_FRACTION:
        out.append(
            f"only {100 * fractions['confident_fg']:.1f} % of pixels are confident foreground (a map above "
            f"--fg-thresh {fg_thresh}): lower --fg-thresh"
        )
    return out
