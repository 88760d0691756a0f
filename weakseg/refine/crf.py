"""Fully connected CRF (Krähenbühl & Koltun) refinement of label maps and class probabilities via pydensecrf.

Defaults follow IRN's `crf_inference_label`: unary_from_labels(gt_prob=0.7, zero_unsure=False),
Gaussian kernel sxy=3 compat=3, bilateral kernel sxy=50 srgb=5 compat=10, 10 mean-field iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax


@dataclass(frozen=True)
class CRFConfig:
    """Dense CRF parameters (IRN defaults)."""

    gt_prob: float = 0.7  # confidence given to a hard label in its unary
    iters: int = 10  # mean-field iterations
    sxy_gaussian: float = 3.0  # smoothness kernel: spatial std (pixels)
    compat_gaussian: float = 3.0  # smoothness kernel: Potts weight
    sxy_bilateral: float = 50.0  # appearance kernel: spatial std (pixels)
    srgb: float = 5.0  # appearance kernel: colour std
    compat_bilateral: float = 10.0  # appearance kernel: Potts weight


def _check_image(image: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
    """Validate a uint8 HxWx3 image matching hw and return it C-contiguous."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"CRF image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    if image.shape[:2] != tuple(hw):
        raise ValueError(f"CRF image is {image.shape[:2]} but the labels/probabilities are {tuple(hw)}")
    return np.ascontiguousarray(image)


def _infer(image: np.ndarray, unary: np.ndarray, n_labels: int, config: CRFConfig) -> np.ndarray:
    """Run mean-field inference; returns float32 Q [n_labels, H*W]."""
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=config.sxy_gaussian, compat=config.compat_gaussian)
    d.addPairwiseBilateral(sxy=config.sxy_bilateral, srgb=config.srgb, rgbim=image, compat=config.compat_bilateral)
    return np.asarray(d.inference(config.iters), dtype=np.float32)


def crf_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, config: CRFConfig | None = None) -> np.ndarray:
    """Refine a hard label map (values 0..n_labels-1) with a dense CRF; returns uint8 HxW in 0..n_labels-1."""
    config = config or CRFConfig()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be HxW, got shape {labels.shape}")
    image = _check_image(image, labels.shape)
    if not 1 <= n_labels <= 256:
        raise ValueError(f"n_labels must be in 1..256, got {n_labels}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"labels hold values outside 0..{n_labels - 1}")
    if n_labels == 1:
        return np.zeros(labels.shape, dtype=np.uint8)
    unary = unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=config.gt_prob, zero_unsure=False)
    q = _infer(image, unary, n_labels, config)
    return q.argmax(0).reshape(labels.shape).astype(np.uint8)


def crf_probs(image: np.ndarray, probs: np.ndarray, config: CRFConfig | None = None) -> np.ndarray:
    """Refine class probabilities [n,H,W] (summing to 1 over n) with a dense CRF; returns float32 [n,H,W]."""
    config = config or CRFConfig()
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be [n,H,W], got shape {probs.shape}")
    image = _check_image(image, probs.shape[1:])
    n = probs.shape[0]
    if n == 1:
        return np.ones_like(probs)
    q = _infer(image, unary_from_softmax(probs), n, config)
    return q.reshape(probs.shape)


def crf_refine_label(image: np.ndarray, label: np.ndarray, config: CRFConfig | None = None) -> np.ndarray:
    """CRF-refine a label of arbitrary values (e.g. 0/class ids) within its value set; 255 too counts as a label."""
    label = np.asarray(label)
    values, compact = np.unique(label, return_inverse=True)
    refined = crf_labels(image, compact.reshape(label.shape), len(values), config)
    return values[refined].astype(label.dtype, copy=False)
