"""CAM (Eq. 2.1) and Grad-CAM (Eq. 2.2) against hand computations on a tiny model."""

import pytest
import torch
import torch.nn.functional as F

from weakseg.attribution import CAM, GradCAM, MultiScale, compute_maps
from tests.conftest import random_bn_classifier

ONE_SCALE = MultiScale(scales=(1.0,), flip=False)


@pytest.fixture(scope="module")
def model():
    return random_bn_classifier()


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 48, 40, generator=g)


def _norm(m):
    m = F.relu(m)
    return m / m.flatten(1).amax(1).clamp_min(1e-5)[:, None, None]


def _up(m, size):
    return F.interpolate(m[None], size=size, mode="bilinear", align_corners=False)[0]


def test_logits_are_gap_of_cams(model, image):
    logits, cams = model.logits_and_cams(image[None])
    assert torch.allclose(logits, model(image[None]), atol=1e-5)
    assert torch.allclose(logits, cams.mean(dim=(2, 3)), atol=1e-6)


def test_cam_equals_eq_2_1_by_hand(model, image):
    classes = [0, 2]
    f = model.features(image[None])[0]  # [D,h,w]
    w = model.classifier.weight[:, :, 0, 0]  # [C,D]
    by_hand = torch.einsum("cd,dhw->chw", w[classes], f)
    assert f.shape[-1] == 5 and f.shape[-2] == 6  # output stride 8
    expected = _norm(_up(F.relu(by_hand), image.shape[-2:]))
    got = compute_maps(CAM(), model, image, classes, ONE_SCALE)
    assert got.shape == (2, 48, 40)
    assert torch.allclose(got, expected, atol=1e-5)
    assert got.min() >= 0 and got.amax(dim=(1, 2)).allclose(torch.ones(2))


def test_gradcam_equals_eq_2_2_by_hand_at_inner_layer(model, image):
    classes = [1, 3]
    _, kept = model.stage_outputs(image[None], keep=("layer2",))
    maps = []
    for c in classes:
        f = kept["layer2"].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits, _ = model.forward_from("layer2", f)
            logits[0, c].backward()
        maps.append(F.relu((f * f.grad).sum(dim=1))[0])  # Eq. 2.2, element-wise
    expected = _norm(_up(torch.stack(maps), image.shape[-2:]))
    got = compute_maps(GradCAM(target_layer="layer2"), model, image, classes, ONE_SCALE)
    assert torch.allclose(got, expected, atol=1e-5)
    cam = compute_maps(CAM(), model, image, classes, ONE_SCALE)
    assert not torch.allclose(got, cam, atol=1e-2)  # an inner layer gives a different map


@pytest.mark.parametrize("weighting", ["pixel", "channel"])
def test_gradcam_at_last_layer_equals_cam(model, image, weighting):
    classes = [0, 1, 3]
    ms = MultiScale(scales=(1.0, 0.5), flip=True)
    cam = compute_maps(CAM(), model, image, classes, ms)
    grad = compute_maps(GradCAM(target_layer="layer4", weighting=weighting), model, image, classes, ms)
    assert torch.allclose(cam, grad, atol=1e-4)


def test_multiscale_flip_and_no_parameter_gradients(model, image):
    maps = compute_maps(GradCAM(), model, image, [2], MultiScale())
    assert maps.shape == (1, 48, 40) and 0 <= maps.min() and maps.max() <= 1 + 1e-6
    assert all(p.grad is None for p in model.parameters())
    flipped = compute_maps(CAM(), model, image.flip(-1), [2], MultiScale(scales=(1.0,), flip=True))
    plain = compute_maps(CAM(), model, image, [2], MultiScale(scales=(1.0,), flip=True))
    assert torch.allclose(flipped.flip(-1), plain, atol=1e-5)  # flip aggregation is flip-equivariant


def test_no_classes_gives_empty_maps(model, image):
    assert compute_maps(CAM(), model, image, [], ONE_SCALE).shape == (0, 48, 40)
