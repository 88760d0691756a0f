"""PAR (AFA / ToCo's pixel-adaptive refinement) and the PAR refiner behind the Refiner interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weakseg.refine.par import PARConfig, par_affinity, par_offsets, par_refine
from weakseg.refine.refiner import PARRefiner, Refiner, scores_to_label, with_background


def _two_colours(h: int = 40, w: int = 56, split: int = 28, seed: int = 0) -> np.ndarray:
    """Red left of `split`, blue right of it, with mild pixel noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.int64)
    img[:, :split] = (200, 60, 40)
    img[:, split:] = (40, 90, 200)
    return np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


def test_defaults_follow_the_authors():
    c = PARConfig()
    assert (c.dilations, c.num_iter, c.w1, c.w2) == ((1, 2, 4, 8, 12, 24), 10, 0.3, 0.01)
    offsets = par_offsets(c.dilations)
    assert len(offsets) == 48 and len(set(offsets)) == 48 and (0, 0) not in offsets
    assert offsets[:8] == [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def test_weights_sum_to_one_over_neighbours():
    weights = par_affinity(_two_colours(), device="cpu")
    assert weights.shape == (48, 40, 56) and weights.device.type == "cpu"
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(0), torch.ones(40, 56), rtol=0, atol=1e-5)
    raw = par_affinity(_two_colours(), PARConfig(normalize=False))
    torch.testing.assert_close(raw.sum(0), torch.full((40, 56), 1.01), rtol=0, atol=1e-5)  # the authors' 1 + w2


def test_colour_edge_cuts_the_weights():
    weights = par_affinity(_two_colours())
    right = par_offsets(PARConfig().dilations).index((0, 1))
    assert weights[right, 20, 27] < 1e-3 < weights[right, 20, 20]  # red pixel: its right neighbour is blue


def test_constant_image_keeps_a_constant_map_constant():
    image = np.full((24, 30, 3), 120, np.uint8)
    out = par_refine(image, np.full((2, 24, 30), 0.6, np.float32), device="cpu")
    assert out.dtype == np.float32 and out.shape == (2, 24, 30)
    np.testing.assert_allclose(out, 0.6, atol=1e-5)


def test_unnormalised_is_the_authors_scale():
    image, scores = _two_colours(), np.random.default_rng(1).random((2, 40, 56)).astype(np.float32)
    ours = par_refine(image, scores, PARConfig(num_iter=3))
    authors = par_refine(image, scores, PARConfig(num_iter=3, normalize=False))
    np.testing.assert_allclose(authors, ours * 1.01**3, rtol=1e-5)


def test_spill_over_the_colour_edge_is_pulled_back():
    image = _two_colours()
    cam = np.zeros((40, 56), np.float32)
    cam[:, :28] = 0.9
    cam[:, 28:36] = 0.9  # an 8 px spill onto the blue side
    out = par_refine(image, cam[None])[0]
    wrong_before, wrong_after = float(cam[:, 28:].sum()), float(out[:, 28:].sum())
    assert wrong_after < 0.6 * wrong_before  # measured: 288 -> 134
    assert out[:, 28:36].max() < 0.3 and out[:, :26].min() > 0.85  # the spill fades, the object keeps its score
    label = PARRefiner().refine(image, cam[None], np.array([3]))
    assert (label[:, 28:] == 0).all() and (label[:, :26] == 3).all()


def test_bad_shapes_raise_value_error():
    image = _two_colours()
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        par_refine(image[..., :2], np.zeros((1, 40, 56)))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        par_refine(image.astype(np.float32), np.zeros((1, 40, 56)))
    with pytest.raises(ValueError, match=r"\[K,H,W\]"):
        par_refine(image, np.zeros((40, 56)))
    with pytest.raises(ValueError, match="but the image is"):
        par_refine(image, np.zeros((1, 20, 28)))
    with pytest.raises(ValueError, match="finite"):
        par_refine(image, np.full((1, 40, 56), np.nan))
    with pytest.raises(ValueError, match="dilations"):
        par_refine(image, np.zeros((1, 40, 56)), PARConfig(dilations=(1, 0)))
    with pytest.raises(ValueError, match="num_iter"):
        PARConfig(num_iter=-1).validate()
    assert par_refine(image, np.zeros((0, 40, 56))).shape == (0, 40, 56)


def test_par_refiner_is_a_refiner_with_a_json_config():
    refiner = PARRefiner(bg_score=0.3)
    assert isinstance(refiner, Refiner)
    cfg = refiner.config()
    assert cfg["name"] == "par" and cfg["bg_score"] == 0.3 and cfg["par"]["dilations"] == [1, 2, 4, 8, 12, 24]
    assert "device" not in cfg
    with pytest.raises(ValueError, match="bg_score"):
        PARRefiner(bg_score=float("nan"))


def test_par_refiner_labels_and_class_ids():
    image = _two_colours()
    maps = np.zeros((2, 40, 56), np.float32)
    maps[0, :, :28] = 0.5  # max-normalised against the largest map value: 0.5 / 0.8
    maps[1, :, 30:] = 0.8
    label = PARRefiner().refine(image, maps, np.array([4, 7]))
    assert label.dtype == np.uint8 and label.shape == (40, 56)
    assert set(np.unique(label)) <= {4, 7} and (label[:, :26] == 4).all() and (label[:, 30:] == 7).all()
    empty = PARRefiner().refine(image, np.zeros((0, 40, 56), np.float32), np.array([], np.int64))
    assert (empty == 0).all()
    with pytest.raises(ValueError, match="class_ids"):
        PARRefiner().refine(image, maps, np.array([4]))


def test_background_plane_and_label_keys():
    maps = np.array([[[0.1, 0.4]], [[0.05, 0.2]]], np.float32)
    scores = with_background(maps, 0.25)
    np.testing.assert_allclose(scores, [[[0.25, 0.25]], [[0.25, 1.0]], [[0.125, 0.5]]])
    assert scores_to_label(scores, np.array([2, 9])).tolist() == [[0, 2]]  # a tie goes to background
