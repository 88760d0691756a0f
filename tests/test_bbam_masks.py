"""Box pseudo masks (weakseg.refine.box_masks): BBAM map -> CRF -> tight / loose masks with the ignore band, the
fallbacks, the semantic aggregation rule, and the filled-box and GrabCut baselines; bad box targets."""

from __future__ import annotations

import numpy as np
import pytest

from weakseg.data.box_targets import BoxError, box_region
from weakseg.refine.box_masks import (
    IGNORE,
    BoxMaskConfig,
    bbam_masks,
    filled_box_masks,
    grabcut_masks,
    mask_from_map,
    semantic_label,
)

H = W = 64
YY, XX = np.mgrid[:H, :W]


def _disk_scene(cy: int = 28, cx: int = 28, r: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk on a dark background and its mask."""
    disk = (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r
    return np.where(disk[..., None], 200, 60).repeat(3, axis=2).astype(np.uint8), disk


def test_tight_and_loose_masks_and_the_ignore_band():
    """On a flat image the CRF follows the map: the tight mask keeps ~15 % of the box, the loose one ~80 %."""
    image = np.full((H, W, 3), 128, np.uint8)
    attribution = np.exp(-((YY - 30) ** 2 + (XX - 28) ** 2) / (2 * 8.0**2))
    box = [8, 10, 49, 51]  # 41 x 41 = 1681 pixels
    out = bbam_masks(image, attribution[None], [box], [3], BoxMaskConfig(blur=False))
    tight, loose = out.instances[0], out.loose[0]
    region = box_region(box, H, W)
    assert out.sources == ("map",)
    assert abs(tight.sum() / region.sum() - 0.15) < 0.03 and abs(loose.sum() / region.sum() - 0.80) < 0.05
    assert not (tight & ~loose).any() and not (loose & ~region).any()
    # the tight mask is the map's peak: a disk around (30, 28)
    assert tight[30, 28] and not tight[12, 10] and loose[20, 28] and not tight[20, 28]
    assert set(np.unique(out.semantic)) == {0, 3, IGNORE}
    assert (out.semantic[tight] == 3).all() and (out.semantic[loose & ~tight] == IGNORE).all()
    assert (out.semantic[~loose] == 0).all()
    assert out.instances.dtype == bool and out.instances.shape == (1, H, W) and out.semantic.dtype == np.uint8


def test_a_tiny_mask_in_a_small_box_is_grown_from_the_box_prior():
    image, disk = _disk_scene()
    peak = np.zeros((H, W))
    peak[28, 28] = 1.0  # a one-pixel map: the CRF keeps at most a pixel or so
    box = [20, 20, 37, 37]  # 289 pixels, 7 % of the image: small enough to be grown
    mask, source = mask_from_map(image, peak, box, 0.85, BoxMaskConfig(blur=False))
    assert source == "grown" and np.array_equal(mask, disk)
    # a box over a tenth of the image is not grown, whatever its mask
    _, source = mask_from_map(image, peak, [8, 8, 40, 40], 0.85, BoxMaskConfig(blur=False))
    assert source == "map"


def test_an_empty_map_falls_back_to_the_box_prior_then_the_box():
    image, disk = _disk_scene()
    box = [20, 20, 37, 37]
    out = bbam_masks(image, np.zeros((1, H, W)), [box], [2])
    assert out.sources == ("box-prior",) and np.array_equal(out.instances[0], disk)
    flat = np.full((H, W, 3), 128, np.uint8)  # nothing to find: the box prior's CRF keeps nothing -> the filled box
    out = bbam_masks(flat, np.zeros((1, H, W)), [box], [2])
    assert out.sources == ("box",) and np.array_equal(out.instances[0], box_region(box, H, W))


def test_masks_stay_in_their_box():
    image, disk = _disk_scene(r=9)
    box = [22, 22, 38, 38]  # cuts the disk
    for th in (0.85, 0.2):
        mask, _ = mask_from_map(image, disk.astype(float), box, th, BoxMaskConfig(blur=False))
        assert np.array_equal(mask, disk & box_region(box, H, W))


def test_semantic_aggregation_by_hand():
    def square(y0, x0, y1, x1):
        m = np.zeros((8, 8), bool)
        m[y0:y1, x0:x1] = True
        return m

    # A (class 1) and B (class 2) overlap; C (class 3) lies inside A; D (class 1) overlaps A (same class)
    boxes = [[0, 0, 6, 6], [4, 4, 8, 8], [1, 1, 3, 3], [0, 5, 2, 8]]
    tight = np.stack([square(0, 0, 6, 6), square(4, 4, 8, 8), square(1, 1, 3, 3), square(5, 0, 8, 2)])
    loose = tight.copy()
    loose[1] = square(3, 3, 8, 8)  # B's loose mask adds a band at row 3 and column 3
    label = semantic_label(tight, loose, boxes, [1, 2, 3, 1])
    expected = np.zeros((8, 8), np.uint8)
    expected[0:6, 0:6] = 1
    expected[4:8, 4:8] = 2
    expected[4:6, 4:6] = IGNORE  # claimed by classes 1 and 2
    expected[5:8, 0:2] = 1  # D: same class as A where they overlap, no conflict
    expected[1:3, 1:3] = 3  # C: inside box A -> written on top (A and C were both claimed there)
    band = loose[1] & ~tight[1]
    expected[band] = IGNORE  # the loose-but-not-tight band is ignored last, over everything
    assert np.array_equal(label, expected)


def test_filled_box_baseline():
    image = np.zeros((H, W, 3), np.uint8)
    out = filled_box_masks(image, [[2.5, 3.0, 10.0, 20.2], [30, 30, 64, 64]], [1, 4])
    assert out.sources == ("box", "box")
    assert out.instances[0].sum() == (21 - 3) * (10 - 2)  # rows 3..20, columns 2..9
    assert np.array_equal(out.instances[1], box_region([30, 30, 64, 64], H, W))
    assert np.array_equal(out.loose, out.instances) and (out.semantic[out.instances[1]] == 4).all()
    assert (out.semantic[~out.instances.any(0)] == 0).all()


def test_grabcut_baseline_finds_the_object_inside_the_box():
    image, disk = _disk_scene(r=9)
    rng = np.random.default_rng(0)
    image = np.clip(image.astype(int) + rng.integers(-15, 16, image.shape), 0, 255).astype(np.uint8)
    box = [14, 14, 43, 43]
    out = grabcut_masks(image, [box, [0, 0, 64, 64]], [1, 2])
    region = box_region(box, H, W)
    for mask in out.instances:
        assert mask.any()
    assert not (out.instances[0] & ~region).any()
    iou = (out.instances[0] & disk).sum() / (out.instances[0] | disk).sum()
    assert out.sources[0] == "grabcut" and iou > 0.8
    again = grabcut_masks(image, [box], [1])
    assert np.array_equal(again.instances[0], out.instances[0])  # seeded


@pytest.mark.parametrize(
    "boxes, labels, match",
    [
        ([[0, 0, 10, 10], [50, 50, 70, 60]], [1, 2], r"box 1 \(50, 50, 70, 60\): extends outside the 64x64 image"),
        ([[0, 0, 10, 10], [5, 5, 5.5, 9]], [1, 2], "box 1 .* empty or degenerate"),
        ([[0, 0, 10, 10]], [255], "box 0: class id 255 cannot be written"),
        ([[0, 0, 10, 10]], [0], "box 0: class id 0"),
        (np.zeros((0, 4)), np.zeros(0, int), "no boxes"),
    ],
)
def test_bad_box_targets(boxes, labels, match):
    image = np.zeros((H, W, 3), np.uint8)
    n = len(boxes)
    for build in (
        lambda: bbam_masks(image, np.zeros((n, H, W)), boxes, labels),
        lambda: filled_box_masks(image, boxes, labels),
        lambda: grabcut_masks(image, boxes, labels),
    ):
        with pytest.raises(BoxError, match=match):
            build()


def test_bad_maps_and_images():
    image = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(ValueError, match=r"maps must be \[B, H, W\]"):
        bbam_masks(image, np.zeros((2, H, W)), [[0, 0, 10, 10]], [1])
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        filled_box_masks(image.astype(np.float32), [[0, 0, 10, 10]], [1])
    with pytest.raises(ValueError, match="th_loose"):
        BoxMaskConfig(th_fg=0.2, th_loose=0.85)
