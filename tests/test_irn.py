"""IRN's parts (issue 15): affinity pair sets by hand and against the authors' flat-index formulation, the loss by
hand, the batched path affinity, the network's stride-4 outputs on ResNet and EfficientNet-Lite, its checkpoint,
and the boundary map's flip averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weakseg.errors import CheckpointError
from weakseg.models.classifier_io import build_classifier_model, save_classifier
from weakseg.models.irn import IRN, IRNConfig, load_irn, save_irn
from weakseg.models.irn_infer import boundary_map, irn_outputs
from weakseg.models.resnet_cam import ClassifierConfig
from weakseg.refine.irn_labels import affinity_labels, pair_window, reduce_label
from weakseg.refine.irn_loss import batched_path_affinity, irn_loss
from weakseg.refine.random_walk import neighbour_offsets, path_affinity


def _small_irn(arch: str = "resnet18", output_stride: int = 8, crop: int = 64) -> IRN:
    torch.manual_seed(0)
    classifier = build_classifier_model(ClassifierConfig(num_classes=3, arch=arch, output_stride=output_stride))
    return IRN(classifier, IRNConfig(crop=crop)).eval()


def test_affinity_label_pair_sets_by_hand():
    label = np.array([[0, 0, 1, 1], [0, 255, 1, 2], [0, 0, 2, 2]], dtype=np.uint8)
    offsets = neighbour_offsets(2)
    assert sorted(offsets) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    bg, fg, neg = affinity_labels(label, radius=2)
    d = {o: i for i, o in enumerate(offsets)}
    # the window (rows < h - 1, 1 <= column < w - 1) holds the sources (0,1), (0,2), (1,1), (1,2)
    assert pair_window(3, 4, 2).tolist() == [[False, True, True, False], [False, True, True, False], [False] * 4]
    want_bg = {((0, 1), (1, -1))}  # 0 -> (1,0) = 0
    want_fg = {((0, 2), (0, 1)), ((0, 2), (1, 0))}  # 1 -> (0,3) = 1, 1 -> (1,2) = 1
    want_neg = {
        ((0, 1), (0, 1)),  # 0 -> 1
        ((0, 1), (1, 1)),  # 0 -> (1,2) = 1
        ((0, 2), (1, 1)),  # 1 -> (1,3) = 2
        ((1, 2), (0, 1)),  # 1 -> 2
        ((1, 2), (1, -1)),  # 1 -> 0
        ((1, 2), (1, 0)),  # 1 -> 2
        ((1, 2), (1, 1)),  # 1 -> 2
    }
    # every pair touching 255 is in no set: (0,1)->(1,1), (0,2)->(1,1) and all of the source (1,1)
    for got, want in ((bg, want_bg), (fg, want_fg), (neg, want_neg)):
        assert got.dtype == np.float32 and got.shape == (4, 3, 4)
        found = {((int(y), int(x)), offsets[k]) for k, y, x in zip(*np.nonzero(got), strict=True)}
        assert found == want
    assert bg[d[(1, 0)], 0, 1] == fg[d[(1, 0)], 0, 1] == neg[d[(1, 0)], 0, 1] == 0  # (0,1) -> 255


def _authors_affinity_labels(label: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GetAffinityLabelFromIndices over PathIndex's flat src/dst indices (written from the authors' description)."""
    h, w = label.shape
    rf = radius - 1
    full = np.arange(h * w).reshape(h, w)
    ch, cw = h - rf, w - 2 * rf
    src = full[:ch, rf : rf + cw].reshape(-1)
    dst = np.stack([full[dy : dy + ch, rf + dx : rf + dx + cw].reshape(-1) for dy, dx in neighbour_offsets(radius)])
    flat = label.reshape(-1)
    a, b = flat[src][None], flat[dst]
    valid = (a < 255) & (b < 255)
    equal = a == b
    return (equal & valid & (a == 0)), (equal & valid & (a > 0)), (~equal & valid)


def test_affinity_labels_equal_the_authors_flat_index_formulation_at_radius_10():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), size=(24, 28), p=[0.4, 0.25, 0.25, 0.1])
    label[5:15, 8:20] = 1  # a block, so positive fg pairs are plentiful
    ours = affinity_labels(label, radius=10)
    rf = 9
    for mine, theirs in zip(ours, _authors_affinity_labels(label, 10), strict=True):
        assert mine.shape == (152, 24, 28)
        assert np.array_equal(mine[:, : 24 - rf, rf : 28 - rf].reshape(152, -1), theirs.astype(np.float32))
        assert mine.sum() == theirs.sum()  # nothing outside the window
    assert all(t.sum() > 0 for t in ours)


def test_reduce_label_takes_every_fourth_pixel_from_the_first():
    label = np.arange(10 * 12, dtype=np.uint8).reshape(10, 12)
    assert reduce_label(label).tolist() == [[label[y, x] for x in (0, 4, 8)] for y in (0, 4, 8)]


def test_loss_by_hand_on_one_source_pixel():
    # radius 2 on a 2x3 grid: the window is the one source (0,1); its four pairs and IRN's paths:
    # (0,1): {(0,1),(0,2)}; (1,-1): {(0,1),(0,0),(1,1),(1,0)}; (1,0): {(0,1),(1,1)}; (1,1): {(0,1),(0,2),(1,1),(1,2)}
    e = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64)
    aff = {(0, 1): 1 - 0.3, (1, -1): 1 - 0.5, (1, 0): 1 - 0.5, (1, 1): 1 - 0.6}
    logits = torch.log(e / (1 - e)).reshape(1, 1, 2, 3).requires_grad_(True)
    disp = torch.tensor(
        [[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], [[0.5, 1.5, -2.0], [1.0, 0.25, 0.0]]], dtype=torch.float64
    )
    disp = disp[None].requires_grad_(True)  # [1,2,2,3]: dy plane, dx plane
    offsets = neighbour_offsets(2)
    labels = {k: torch.zeros(1, 4, 2, 3, dtype=torch.float64) for k in ("bg", "fg", "neg")}
    labels["bg"][0, offsets.index((0, 1)), 0, 1] = 1
    labels["fg"][0, offsets.index((1, 0)), 0, 1] = 1
    labels["neg"][0, offsets.index((1, 1)), 0, 1] = 1
    labels["neg"][0, offsets.index((1, -1)), 0, 1] = 1
    loss = irn_loss(logits, disp, labels["bg"], labels["fg"], labels["neg"], radius=2)

    eps = 1e-5
    pos = (-math.log(aff[(0, 1)] + eps) / (1 + eps)) / 2 + (-math.log(aff[(1, 0)] + eps) / (1 + eps)) / 2
    neg = (-math.log(1 + eps - aff[(1, 1)]) - math.log(1 + eps - aff[(1, -1)])) / (2 + eps)
    d = disp[0].detach()
    # fg pair (0,1) -> (1,1), offset (1,0): |D(0,1) - D(1,1) - (1,0)| over both channels
    dp_fg = (abs(d[0, 0, 1] - d[0, 1, 1] - 1) + abs(d[1, 0, 1] - d[1, 1, 1] - 0)) / (2 + eps)
    # bg pair (0,1) -> (0,2): |D(0,1) - D(0,2)|
    dp_bg = (abs(d[0, 0, 1] - d[0, 0, 2]) + abs(d[1, 0, 1] - d[1, 0, 2])) / (2 + eps)
    assert loss.pos_aff.item() == pytest.approx(pos, rel=1e-9)
    assert loss.neg_aff.item() == pytest.approx(neg, rel=1e-9)
    assert loss.dp_fg.item() == pytest.approx(float(dp_fg), rel=1e-9)
    assert loss.dp_bg.item() == pytest.approx(float(dp_bg), rel=1e-9)
    assert loss.total.item() == pytest.approx((pos + neg) / 2 + float(dp_fg + dp_bg) / 2, rel=1e-9)
    loss.total.backward()
    assert logits.grad is not None and disp.grad is not None
    # the boundary gradient reaches the paths' maxima only: 0.3 at (0,2), 0.5 at (1,1), 0.6 at (1,2)
    assert (logits.grad[0, 0] != 0).tolist() == [[False, False, True], [False, True, True]]
    assert disp.grad.abs().sum() > 0


def test_batched_path_affinity_equals_each_maps_own():
    torch.manual_seed(0)
    edge = torch.rand(3, 7, 9)
    batched = batched_path_affinity(edge, radius=4)
    assert batched.shape == (3, len(neighbour_offsets(4)), 7, 9)
    for i in range(3):
        assert torch.equal(batched[i], path_affinity(edge[i], 4))


@pytest.mark.parametrize(
    ("arch", "output_stride", "strides"),
    [
        ("resnet18", 8, [4, 4, 8, 8, 8]),
        ("resnet18", 32, [4, 4, 8, 16, 32]),
        ("efficientnet-lite0", 16, [2, 4, 8, 16, 16]),
    ],
)
def test_outputs_at_stride_4_on_resnet_and_efficientnet_lite(arch, output_stride, strides):
    model = _small_irn(arch, output_stride).train()
    assert model.stage_strides == strides
    assert not model.backbone.training  # the frozen backbone stays in eval mode under train()
    x = torch.rand(2, 3, 50, 62)
    edge, disp = model(x)
    assert edge.shape == (2, 1, 13, 16) and disp.shape == (2, 2, 13, 16)
    (edge.sum() + disp.sum()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.edge_parameters() + model.displacement_parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_branch_widths_follow_the_backbone():
    assert _small_irn("resnet18").config.disp_width == 64  # layer3: 256 channels / 4
    assert _small_irn("efficientnet-lite0", 16).config.disp_width == 32  # layer3: 112 / 4 -> 32


def test_checkpoint_round_trip_and_wrong_kind(tmp_path):
    model = _small_irn()
    with torch.no_grad():
        model.mean_shift.copy_(torch.tensor([0.5, -0.25]))
        for p in model.edge_parameters():
            p.add_(0.01)
    save_irn(tmp_path / "model.safetensors", model, ["a", "b", "c"], {"epoch": 1})
    loaded = load_irn(tmp_path, "cpu")
    assert loaded.classes == ["a", "b", "c"] and loaded.config == model.config
    assert torch.equal(loaded.mean_shift, model.mean_shift)
    x = torch.rand(1, 3, 40, 40)
    for a, b in zip(model(x), loaded(x), strict=True):
        assert torch.equal(a, b)
    save_classifier(tmp_path / "clf.safetensors", model.backbone, ["a", "b", "c"])
    with pytest.raises(CheckpointError, match="expected an irn"):
        load_irn(tmp_path / "clf.safetensors")


def test_boundary_map_is_averaged_with_the_horizontal_flip():
    model = _small_irn(crop=64)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    image[:, :20] = 30  # not symmetric
    edge = boundary_map(model, image, "cpu")
    assert edge.dtype == np.float32 and edge.shape == (10, 12)
    assert edge.min() >= 0 and edge.max() <= 1
    flipped = boundary_map(model, np.ascontiguousarray(image[:, ::-1]), "cpu")
    np.testing.assert_allclose(flipped, edge[:, ::-1], atol=1e-6)  # symmetric: B(flip x) = flip B(x)
    logits, _ = irn_outputs(model, image, "cpu")
    single = torch.sigmoid(logits[0]).numpy()
    assert np.abs(single - edge).max() > 1e-4  # the flip's half does change the map
    np.testing.assert_allclose(edge, torch.sigmoid((logits[0] + logits[1]) / 2).numpy(), atol=1e-6)
    odd = boundary_map(model, image[:39, :45], "cpu")
    assert odd.shape == (10, 12)  # ceil(H/4) x ceil(W/4)


def test_maps_at_stride_4_are_block_means_each_divided_by_its_maximum():
    from weakseg.refine.irn_refiner import stride4_maps

    maps = torch.zeros(2, 5, 6)
    maps[0, :4, :4] = 0.8  # one full block
    maps[0, 4, 4:] = 0.4  # the corner's partial block: 1 row x 2 columns, both 0.4
    maps[0, 0, 4] = 0.8  # 1 of the 8 pixels of the top-right partial block (4 rows x 2 columns)
    maps[1] = 0.5
    small = stride4_maps(maps)
    scale = 0.8 + 1e-5
    want0 = torch.tensor([[0.8, 0.1], [0.0, 0.4]]) / scale
    torch.testing.assert_close(small[0], want0)
    torch.testing.assert_close(small[1], torch.full((2, 2), 0.5 / (0.5 + 1e-5)))


def test_walk_over_a_given_boundary_is_what_refine_uses_and_a_closed_wall_holds_the_scores():
    from weakseg.models.irn_infer import boundary_tensor
    from weakseg.refine.irn_refiner import IRNRefineConfig, IRNRefiner

    model = _small_irn(crop=64)
    refiner = IRNRefiner(model, IRNRefineConfig(exp_times=5))
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
    maps = np.zeros((1, 32, 40), np.float32)
    maps[0, 4:12, 4:12] = 1.0  # a seed inside the left half
    own = refiner.walk(maps, boundary_tensor(model, image, "cpu"))
    torch.testing.assert_close(refiner.scores(image, maps), own)
    wall = torch.zeros(8, 10)
    wall[:, 5] = 1.0  # a closed vertical boundary at stride 4 between x = 20 and x = 24 px
    walked = refiner.walk(maps, wall)
    assert walked.shape == (1, 32, 40)
    assert float(walked[0, :, :16].sum()) > 0
    assert float(walked[0, :, 28:].abs().max()) < 1e-6  # no mass crosses the wall
    with pytest.raises(ValueError, match="stride 4"):
        refiner.walk(maps, torch.zeros(7, 10))
