"""Dense CRF refinement and IRN's fg/bg/ignore seed-label rule."""

from __future__ import annotations

import numpy as np
import pytest

from weakseg.refine.crf import CRFConfig, crf_labels, crf_probs, crf_refine_label
from weakseg.refine.seed_label import refine_seed_label, seed_indices, threshold_seed


def _disk(h: int = 64, w: int = 64, r: int = 16, cy: int = 32, cx: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def scene():
    """A bright disk on a dark background (with mild pixel noise) and its true mask."""
    rng = np.random.default_rng(0)
    mask = _disk()
    img = np.where(mask[..., None], 220, 30).repeat(3, axis=2) + rng.integers(-10, 11, (64, 64, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def test_defaults_follow_irn():
    c = CRFConfig()
    assert (c.gt_prob, c.iters, c.sxy_gaussian, c.compat_gaussian) == (0.7, 10, 3, 3)
    assert (c.sxy_bilateral, c.srgb, c.compat_bilateral) == (50, 5, 10)


def test_crf_cleans_salt_and_pepper_seed(scene):
    image, mask = scene
    noisy = mask ^ (np.random.default_rng(1).random(mask.shape) < 0.2)
    out = crf_labels(image, noisy.astype(np.uint8), 2)
    assert out.dtype == np.uint8 and out.shape == mask.shape
    assert _iou(out == 1, mask) > _iou(noisy, mask) + 0.3
    assert _iou(out == 1, mask) > 0.95


def test_crf_snaps_shifted_blob_to_edges(scene):
    image, mask = scene
    shifted = _disk(cy=37, cx=38)
    out = crf_labels(image, shifted.astype(np.uint8), 2)
    assert _iou(out == 1, mask) > _iou(shifted, mask) + 0.2


def test_crf_probs_and_determinism(scene):
    image, mask = scene
    shifted = _disk(cy=37, cx=38)
    probs = np.stack([0.9 - 0.8 * shifted, 0.1 + 0.8 * shifted]).astype(np.float32)
    q = crf_probs(image, probs)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert _iou(q.argmax(0) == 1, mask) > _iou(shifted, mask)
    np.testing.assert_array_equal(q, crf_probs(image, probs))
    labels = shifted.astype(np.uint8)
    np.testing.assert_array_equal(crf_labels(image, labels, 2), crf_labels(image, labels, 2))


def test_crf_input_checks(scene):
    image, mask = scene
    with pytest.raises(ValueError, match="uint8"):
        crf_labels(image.astype(np.float32), mask.astype(np.uint8), 2)
    with pytest.raises(ValueError, match="outside"):
        crf_labels(image, np.full(mask.shape, 2, np.uint8), 2)
    with pytest.raises(ValueError):
        crf_labels(image[:10], mask.astype(np.uint8), 2)
    # non-contiguous images are accepted
    flipped = image[:, ::-1]
    assert crf_labels(flipped, mask[:, ::-1].astype(np.uint8), 2).shape == mask.shape
    np.testing.assert_array_equal(crf_labels(image, np.zeros(mask.shape, np.uint8), 1), 0)


def test_crf_refine_label_keeps_value_set(scene):
    image, mask = scene
    label = np.where(mask ^ (np.random.default_rng(2).random(mask.shape) < 0.1), 14, 0).astype(np.uint8)
    out = crf_refine_label(image, label)
    assert set(np.unique(out)) <= {0, 14}
    assert _iou(out == 14, mask) > _iou(label == 14, mask)


def test_threshold_seed_ties_go_to_background():
    maps = np.array([[[0.3, 0.31, 0.1]], [[0.2, 0.4, 0.3]]], dtype=np.float32)
    np.testing.assert_array_equal(seed_indices(maps, np.float32(0.3)), [[0, 2, 0]])
    np.testing.assert_array_equal(threshold_seed(maps, np.array([4, 9]), 0.3), [[0, 9, 0]])
    assert threshold_seed(np.zeros((0, 2, 2)), np.zeros(0, int), 0.1).tolist() == [[0, 0], [0, 0]]


def test_fg_bg_ignore_rule_by_hand():
    # pixel: 0 confident class 2 | 1 confident class 5 | 2 below bg thresh | 3 between thresholds
    maps = np.array([[[0.5, 0.1, 0.02, 0.04]], [[0.4, 0.6, 0.03, 0.2]]], dtype=np.float32)
    label = refine_seed_label(None, maps, np.array([2, 5]), fg_thresh=0.3, bg_thresh=0.05)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, [[2, 5, 0, 255]])


def test_fg_bg_ignore_rule_with_crf(scene):
    image, mask = scene
    ring = _disk(r=20) & ~mask  # dark pixels just outside the disk
    maps = np.where(mask, 0.9, 0.0).astype(np.float32)
    maps[ring] = 0.15  # between bg (0.05) and fg (0.3): uncertain
    holes = mask & (np.random.default_rng(3).random(mask.shape) < 0.15)
    maps[holes] = 0.1  # uncertain holes inside the disk
    maps = maps[None]
    plain = refine_seed_label(image, maps, np.array([7]))
    assert (plain[ring] == 255).all() and (plain[holes] == 255).all()
    assert (plain[mask & ~holes] == 7).all() and (plain[~mask & ~ring] == 0).all()

    refined = refine_seed_label(image, maps, np.array([7]), crf=CRFConfig())
    assert set(np.unique(refined)) <= {0, 7, 255}
    # the CRF pulls the dark ring to background and fills the holes from their bright neighbours
    assert (refined[ring] == 0).mean() > 0.9
    assert (refined[mask] == 7).mean() > 0.95
    # same as composing IRN's steps by hand
    fg = crf_labels(image, seed_indices(maps, 0.30), 2)
    bg = crf_labels(image, seed_indices(maps, 0.05), 2)
    expected = np.where(fg == 1, 7, np.where(bg == 0, 0, 255))
    np.testing.assert_array_equal(refined, expected)
    with pytest.raises(ValueError, match="image"):
        refine_seed_label(None, maps, np.array([7]), crf=CRFConfig())
