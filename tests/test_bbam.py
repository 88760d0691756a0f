"""BBAM (dissertation 5.3.2): proposals, positives, the perturbation, the loss and two Adam steps by hand, batched
objects against one at a time, gradients off, bad box targets. A tiny seeded Faster R-CNN (tests/bbam_helpers.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.bbam_helpers import BOXES, LABELS, fit_box_heads, scene_image, tiny_detector
from weakseg.attribution.bbam import (
    BBAM,
    adaptive_stride,
    bbam_one_at_a_time,
    jitter_proposals,
    perturb,
    select_positives,
    tv_norm,
    union_grid,
)
from weakseg.data.box_targets import BoxError
from weakseg.errors import WeaksegError

FAST = {"stride": "fixed", "fixed_stride": 8.0}  # a 12 x 16 grid over the 96 x 128 detector input


@pytest.fixture(scope="module")
def detector():
    """The tiny detector with its box predictor fitted to the scene (train mode, trainable, as handed over)."""
    torch.set_num_threads(1)
    det = tiny_detector()
    return fit_box_heads(det, [scene_image()], [BOXES], [LABELS])


def test_proposals_count_range_clip_and_seed():
    boxes = torch.tensor([[10.0, 4.0, 30.0, 44.0], [0.0, 0.0, 64.0, 48.0]])
    g = torch.Generator().manual_seed(5)
    p = jitter_proposals(boxes, 1000, 0.3, 48, 64, g)
    assert p.shape == (2, 1000, 4)
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1)[:, None]
    rel = (p - boxes[:, None]) / sides
    assert rel.abs().max() <= 0.3 + 1e-12
    # box 0 is away from the image border on the left: its x1 moves both ways, over almost the whole range
    assert rel[0, :, 0].min() < -0.29 and rel[0, :, 0].max() > 0.29
    # box 1 fills the image: clipped, its coordinates only move inwards
    assert (p[..., 0] >= 0).all() and (p[..., 1] >= 0).all() and (p[..., 2] <= 64).all() and (p[..., 3] <= 48).all()
    assert (rel[1, :, 0] >= 0).all() and (rel[1, :, 2] <= 0).all() and (p[1, :, 0] == 0).any()
    assert ((p[..., 2] - p[..., 0]) > 0).all() and ((p[..., 3] - p[..., 1]) > 0).all()
    again = jitter_proposals(boxes, 1000, 0.3, 48, 64, torch.Generator().manual_seed(5))
    other = jitter_proposals(boxes, 1000, 0.3, 48, 64, torch.Generator().manual_seed(6))
    assert torch.equal(p, again) and not torch.equal(p, other)


def _boxes_with_iou(ious: list[float]) -> torch.Tensor:
    """Boxes [0, 0, 10, 10 * iou] whose IoU with [0, 0, 10, 10] is exactly iou."""
    return torch.tensor([[0.0, 0.0, 10.0, 10.0 * v] for v in ious])


def test_positives_cascade_by_hand():
    gt = torch.tensor([0.0, 0.0, 10.0, 10.0])
    # 150 right-class proposals at IoU 0.95: more than 100 at 0.9, so the first 100 of them
    idx, t = select_positives(torch.ones(150, dtype=torch.long), _boxes_with_iou([0.95] * 150), gt, 1)
    assert t == 0.9 and idx.tolist() == list(range(100))
    # 50 at 0.95 then 80 at 0.87 (and 20 wrong-class at 0.95): 0.9 has 50 (not > 100) -> 0.85 has 130 -> first 100
    ious = [0.95] * 50 + [0.87] * 80 + [0.95] * 20
    classes = torch.tensor([2] * 130 + [1] * 20)
    idx, t = select_positives(classes, _boxes_with_iou(ious), gt, 2)
    assert t == 0.85 and idx.tolist() == list(range(100))
    # 10 at 0.95, 10 at 0.82, 10 at 0.5: no threshold has more than 100 -> the last (0.8) set, all 20
    ious = [0.5] * 10 + [0.95] * 10 + [0.82] * 10
    idx, t = select_positives(torch.ones(30, dtype=torch.long), _boxes_with_iou(ious), gt, 1)
    assert t == 0.8 and idx.tolist() == list(range(10, 30))
    # the class decides: background predictions are never positives
    idx, _ = select_positives(torch.zeros(30, dtype=torch.long), _boxes_with_iou(ious), gt, 1)
    assert len(idx) == 0
    # a custom cascade and cap
    idx, t = select_positives(torch.ones(30, dtype=torch.long), _boxes_with_iou(ious), gt, 1, (0.9,), 5)
    assert t == 0.9 and idx.tolist() == list(range(10, 15))


def test_perturbation_by_hand():
    image = torch.tensor([[[0.2, 0.4], [0.6, 0.8]], [[1.0, 0.0], [0.5, 0.5]], [[0.1, 0.9], [0.3, 0.7]]])
    mask = torch.tensor([[[1.0, 0.0], [0.25, 0.5]]])
    mu = torch.tensor([0.5, 0.4, 0.3])[:, None, None]
    out = perturb(image, mask, mu)
    # pixel (0, 1): M = 0 -> mu; pixel (1, 0): 0.25 I + 0.75 mu; pixel (0, 0): M = 1 -> I
    assert out[:, 0, 1].tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert out[:, 1, 0].tolist() == pytest.approx(
        [0.25 * 0.6 + 0.75 * 0.5, 0.25 * 0.5 + 0.75 * 0.4, 0.25 * 0.3 + 0.75 * 0.3]
    )
    assert torch.equal(out[:, 0, 0], image[:, 0, 0])
    assert out[:, 1, 1].tolist() == pytest.approx([0.65, 0.45, 0.5])


def test_zero_mask_shows_the_detector_the_mean_image(detector):
    """Phi(I, 0) through BBAM's path equals the detector's own preprocessing of an image filled with mu."""
    from weakseg.attribution import bbam

    detector.eval()
    image = scene_image()
    prep = bbam._prepare(detector, image, "mean")
    x = perturb(prep.x, torch.zeros(1, *prep.size), prep.base)
    mu = torch.tensor(detector.transform.image_mean)[:, None, None].expand_as(image).contiguous()
    ref, _ = detector.transform([mu])
    assert torch.allclose(prep.batch(x[None]), ref.tensors, atol=1e-6)
    y = perturb(prep.x, torch.ones(1, *prep.size), prep.base)
    assert torch.equal(y, prep.x)


def test_tv_norm_by_hand():
    a, b, c, d = 0.1, 0.5, 0.9, 0.3
    g = torch.tensor([[a, b], [c, d]])
    expected = (
        abs(a - c) ** 3
        + abs(b - d) ** 3  # vertical
        + abs(a - b) ** 3
        + abs(c - d) ** 3  # horizontal
        + 2 * abs(a - d) ** 3  # main diagonal, counted twice as the authors' tv_norm does
        + 2 * abs(c - b) ** 3  # anti-diagonal, twice
    )
    assert float(tv_norm(g, 3.0)) == pytest.approx(expected)


def test_stride_rule_and_union_init():
    assert adaptive_stride(100.0, 400.0) == pytest.approx(16 + 48 * 0.5)
    assert BBAM(stride="fixed", fixed_stride=20.0).mask_stride(1.0, 4.0) == 20.0
    grid = union_grid(torch.tensor([[8.0, 0.0, 25.0, 17.0], [-3.0, 30.0, 9.0, 41.0]]), 8.0, (6, 5))
    expected = torch.zeros(6, 5)
    expected[0:2, 1:3] = 1  # 8/8=1 .. 25/8=3.1 -> columns 1, 2; rows 0 .. 17/8=2.1 -> 0, 1
    expected[3:5, 0:1] = 1  # x from -3 (clamped to 0) to 9/8=1.1 -> column 0; rows 30/8=3.75 .. 41/8=5.1 -> 3, 4
    assert torch.equal(grid, expected)


def _hand_two_steps(
    detector, image, box, label, method: BBAM, seed: int
) -> tuple[torch.Tensor, list[float], list[float]]:
    """An independent implementation of the mask after two Adam steps for one box (one at a time), the loss before
    each step and its detector (perturbation) term."""
    from torchvision.ops import box_iou

    detector.eval()
    images, _ = detector.transform([image])
    h, w = images.image_sizes[0]
    x = images.tensors[:, :, :h, :w]  # normalised: mu is 0 there, so Phi(I, M) = x * up(M)
    scale = torch.tensor([w / image.shape[2], h / image.shape[1]] * 2)
    # the same proposals: box index 0 of a one-box draw is not the same draw, so draw all and pick
    g = torch.Generator().manual_seed(seed)
    props = jitter_proposals(BOXES, method.proposals, method.jitter, image.shape[1], image.shape[2], g)
    props = (props[box].float() * scale).contiguous()
    gt = BOXES[box] * scale
    heads = detector.roi_heads

    def outputs(inp):
        feats = detector.backbone(F.pad(inp, (0, images.tensors.shape[-1] - w, 0, images.tensors.shape[-2] - h)))
        pooled = heads.box_roi_pool({"0": feats}, [props], [(h, w)])
        return heads.box_predictor(heads.box_head(pooled))

    with torch.no_grad():
        logits0, deltas0 = outputs(x)
    regressed = heads.box_coder.decode(deltas0, [props])[:, label]
    iou = box_iou(regressed, gt[None])[:, 0]
    right = logits0.argmax(1) == label
    for th in method.iou_cascade:  # the cascade, written out again
        keep = [i for i in range(len(props)) if right[i] and iou[i] > th]
        if len(keep) > method.max_positives:
            keep = keep[: method.max_positives]
            break
    assert keep, "the fixture should give this box positives"
    props = props[keep]
    p0 = logits0[keep].softmax(1)[:, label]
    t0 = deltas0[keep][:, 4 * label : 4 * label + 4]
    s = method.fixed_stride
    gh, gw = int(h / s), int(w / s)
    mask = torch.zeros(gh, gw)
    for x1, y1, x2, y2 in regressed[keep].tolist():
        for r in range(gh):
            for c in range(gw):
                if int(max(y1, 0) / s) <= r < int(y2 / s) and int(max(x1, 0) / s) <= c < int(x2 / s):
                    mask[r, c] = 1.0
    m1 = torch.zeros_like(mask)
    m2 = torch.zeros_like(mask)
    losses, detector_terms = [], []
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in (1, 2):
        M = mask.clone().requires_grad_(True)
        up = F.interpolate(M[None, None], size=(h, w), mode="bilinear", align_corners=True)
        logits, deltas = outputs(x * up)
        p = logits.softmax(1)[:, label]
        t = deltas[:, 4 * label : 4 * label + 4]
        per = [(t[i] - t0[i]).abs().sum() / 4 / 2 + (p[i] - p0[i]).abs() / 2 for i in range(len(props))]
        detector_terms.append(float(sum(per).detach()) / len(per))
        loss = sum(per) / len(per) + method.lam * M.abs().sum()
        tv = 0.0
        for r in range(gh):
            for c in range(gw):
                if r + 1 < gh:
                    tv = tv + (M[r + 1, c] - M[r, c]).abs() ** 3
                if c + 1 < gw:
                    tv = tv + (M[r, c + 1] - M[r, c]).abs() ** 3
                if r + 1 < gh and c + 1 < gw:
                    tv = tv + 2 * (M[r + 1, c + 1] - M[r, c]).abs() ** 3 + 2 * (M[r + 1, c] - M[r, c + 1]).abs() ** 3
        loss = loss + method.tv_weight * tv
        losses.append(float(loss.detach()))
        (grad,) = torch.autograd.grad(loss, M)
        m1 = beta1 * m1 + (1 - beta1) * grad
        m2 = beta2 * m2 + (1 - beta2) * grad**2
        step_size = method.lr / (1 - beta1**step)
        mask = (mask - step_size * m1 / ((m2 / (1 - beta2**step)).sqrt() + eps)).clamp(0, 1)
    return mask, losses, detector_terms


def test_two_adam_steps_match_a_hand_computation(detector):
    method = BBAM(iterations=2, **FAST)
    image = scene_image()
    result = method.run(detector, image, BOXES, LABELS, seed=3)
    for b in range(len(BOXES)):
        expected, losses, detector_terms = _hand_two_steps(detector, image, b, int(LABELS[b]), method, seed=3)
        # the loss at M0 and at M1 (so step 1 is checked through it too), its detector term a fair part of it
        assert result.losses[b] == pytest.approx(losses, rel=1e-5, abs=1e-7)
        assert min(d / t for d, t in zip(detector_terms, losses, strict=True)) > 0.05, (detector_terms, losses)
        assert result.grids[b].shape == expected.shape
        assert torch.allclose(result.grids[b], expected, atol=1e-5), (b, (result.grids[b] - expected).abs().max())
        # the steps did something: the mask moved from its 0/1 start (Adam's first step is lr per cell)
        assert ((expected > 0) & (expected < 1)).any()
        up = F.interpolate(expected[None, None], size=image.shape[1:], mode="bilinear", align_corners=True)[0, 0]
        assert torch.allclose(result.maps[b], up, atol=1e-5)


def test_batched_objects_equal_one_at_a_time(detector):
    method = BBAM(iterations=12, **FAST)
    image = scene_image()
    batched = method.run(detector, image, BOXES, LABELS, seed=1)
    assert all(n > 0 for n in batched.positives)
    single = bbam_one_at_a_time(method, detector, image, BOXES, LABELS, seed=1)
    assert (batched.maps - single).abs().max() < 1e-5
    chunked = BBAM(iterations=12, max_batch=1, **FAST).box_maps(detector, image, BOXES, LABELS, seed=1)
    assert (batched.maps - chunked).abs().max() < 1e-5
    # the maps differ between the boxes (each has its own mask) and lie in [0, 1]
    assert batched.maps.shape == (2, 48, 64) and 0 <= batched.maps.min() and batched.maps.max() <= 1
    assert (batched.maps[0] - batched.maps[1]).abs().max() > 0.1


def test_parameter_gradients_stay_off_and_flags_are_restored(detector):
    detector.train()
    frozen = detector.roi_heads.box_head.fc6.weight
    frozen.requires_grad_(False)  # a caller's own choice survives
    flags = {n: p.requires_grad for n, p in detector.named_parameters()}
    buffers = {n: b.clone() for n, b in detector.named_buffers()}
    with torch.no_grad():  # a caller inside no_grad still gets maps (BBAM needs input gradients)
        maps = BBAM(iterations=2, **FAST).box_maps(detector, scene_image(), BOXES, LABELS)
    assert maps.shape == (2, 48, 64)
    assert all(m.training for m in detector.modules())
    assert {n: p.requires_grad for n, p in detector.named_parameters()} == flags
    assert all(p.grad is None for p in detector.parameters())
    for n, b in detector.named_buffers():  # eval mode: BatchNorm statistics untouched
        assert torch.equal(b, buffers[n]), n
    frozen.requires_grad_(True)


def test_seeded_maps_are_reproducible(detector):
    method = BBAM(iterations=3, **FAST)
    a = method.box_maps(detector, scene_image(), BOXES, LABELS, seed=7)
    b = method.box_maps(detector, scene_image(), BOXES, LABELS, seed=7)
    c = method.box_maps(detector, scene_image(), BOXES, LABELS, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_options_change_the_maps(detector):
    image = scene_image()
    base = BBAM(iterations=6, **FAST).run(detector, image, BOXES, LABELS)
    for option in ({"use_box_head": False}, {"use_class_head": False}, {"union_init": False}, {"baseline": "blur"}):
        other = BBAM(iterations=6, **FAST, **option).box_maps(detector, image, BOXES, LABELS)
        assert (other - base.maps).abs().max() > 1e-3, option
    adaptive = BBAM(iterations=1).run(detector, image, BOXES, LABELS)
    for b, grid in enumerate(adaptive.grids):
        s = adaptive_stride(float((BOXES[b, 2] - BOXES[b, 0]) * (BOXES[b, 3] - BOXES[b, 1])), 48.0 * 64.0)
        assert adaptive.strides[b] == pytest.approx(s)
        assert grid.shape == (int(96 / s), int(128 / s))
    with pytest.raises(ValueError, match="use_box_head"):
        BBAM(use_box_head=False, use_class_head=False)
    config = BBAM().config()
    assert config["method"] == "bbam" and config["iou_cascade"] == [0.9, 0.85, 0.8] and config["lam"] == 0.007
    assert "batch_objects" not in config and "max_batch" not in config
    assert config["proposals"] == 1000 and config["max_positives"] == 100 and config["iterations"] == 300


def test_a_box_without_positives_gets_a_zero_map(detector):
    # the fitted detector calls box 0 class 1: asked for class 2 there, no proposal is positive
    result = BBAM(iterations=2, **FAST).run(detector, scene_image(), BOXES, torch.tensor([2, 2]))
    assert result.positives[0] == 0 and result.positives[1] > 0
    assert float(result.maps[0].abs().max()) == 0.0


@pytest.mark.parametrize(
    "boxes, labels, match",
    [
        ([[6.0, 8.0, 28.0, 30.0], [34.0, 20.0, 66.0, 44.0]], [1, 2], r"box 1 \(34, 20, 66, 44\): extends outside"),
        ([[6.0, 8.0, 28.0, 30.0], [-1.0, 20.0, 60.0, 44.0]], [1, 2], "box 1 .* outside the 64x48 image"),
        ([[6.0, 8.0, 6.0, 30.0], [34.0, 20.0, 60.0, 44.0]], [1, 2], "box 0 .* empty or degenerate"),
        ([[6.0, 8.0, 28.0, 30.0], [34.0, 44.0, 60.0, 20.0]], [1, 2], "box 1 .* degenerate"),
        ([[6.0, 8.0, 28.0, 30.0], [34.0, 20.0, 60.0, 44.0]], [1, 3], "box 1 .* class id 3 is not in the detector"),
        ([[6.0, 8.0, 28.0, 30.0]], [0], "box 0 .* class id 0 is not in the detector"),
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), "no boxes"),
        ([[6.0, 8.0, float("nan"), 30.0]], [1], "box 0 .* not finite"),
    ],
)
def test_bad_box_targets(detector, boxes, labels, match):
    with pytest.raises(BoxError, match=match) as info:
        BBAM(iterations=1).box_maps(detector, scene_image(), torch.as_tensor(boxes), torch.as_tensor(labels))
    assert isinstance(info.value, WeaksegError) and isinstance(info.value, ValueError)


def test_bad_image_and_model(detector):
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        BBAM().box_maps(detector, torch.rand(1, 48, 64), BOXES, LABELS)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        BBAM().box_maps(detector, scene_image() * 255, BOXES, LABELS)
    with pytest.raises(TypeError, match="Faster R-CNN"):
        BBAM().box_maps(torch.nn.Conv2d(3, 3, 1), scene_image(), BOXES, LABELS)
    assert math.isfinite(float(BBAM(iterations=1).box_maps(detector, scene_image(), BOXES, LABELS).sum()))
