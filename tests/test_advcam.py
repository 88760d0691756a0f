"""AdvCAM (Eqs. 3.2-3.6) against hand computations with autograd on a tiny model."""

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import random_bn_classifier

from weakseg.attribution import CAM, AdvCAM, MultiScale, compute_maps
from weakseg.attribution.advcam import climb, climb_step, input_normalization

ONE_SCALE = MultiScale(scales=(1.0,), flip=False)


def _model(requires_grad=False):
    return random_bn_classifier(requires_grad)


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(1))


def _by_hand_step(model, z, c, cam0, lam, tau, xi, suppress=True, restrict=True):
    """Eqs. 3.5-3.6 for one trajectory, written out: x^t = x^{t-1} + xi * grad L."""
    mean, std = model.normalize.mean, model.normalize.std
    z = z.clone().requires_grad_(True)
    logits, cams = model.logits_and_cams(z * std + mean)
    y = logits[0]
    loss = y[c] - (y.sum() - y[c]) if suppress else y[c]
    cam = F.relu(cams[0, c])
    cam0 = cam.detach() if cam0 is None else cam0  # at t=1, CAM(x^0) is this very forward's map
    peak0 = cam0.max()
    if restrict:
        mask = (cam.detach() / peak0) > tau  # M = 1(CAM(x^{t-1}) > tau), CAM normalised as Eq. 2.1 at x^0
        loss = loss - lam * (mask * (cam / peak0 - cam0 / peak0).abs()).sum()
    (grad,) = torch.autograd.grad(loss, z)
    return (z + xi * grad).detach(), cam.detach()


def test_two_steps_equal_eqs_3_5_and_3_6_by_hand(model, image):
    cfg = AdvCAM(steps=2, xi=0.5, lam=7.0, tau=0.3, restrict_scale="max")  # Eq. 3.6 as printed (not the default)
    rows = torch.stack([image, image.flip(-1)])
    targets = torch.tensor([1, 3])
    mean, std = input_normalization(model, rows)
    z0 = (rows - mean) / std
    z1, cam_x0, ref, ref_max = climb_step(model, z0, targets, cfg, mean, std)
    z2, cam_x1, _, _ = climb_step(model, z1, targets, cfg, mean, std, ref, ref_max)
    for r, c in enumerate(targets.tolist()):  # each row is its own trajectory
        hand1, cam0 = _by_hand_step(model, z0[r:r + 1], c, None, 7.0, 0.3, 0.5)
        hand2, hand_cam1 = _by_hand_step(model, hand1, c, cam0, 7.0, 0.3, 0.5)
        assert torch.allclose(z1[r:r + 1], hand1, atol=1e-5)
        assert torch.allclose(z2[r:r + 1], hand2, atol=1e-5)
        assert torch.allclose(cam_x1[r], hand_cam1, atol=1e-5)
    # the regulariser was active at step 2 (the mask is not empty and CAM(x^1) != CAM(x^0))
    assert ((cam_x1 / ref_max) > 0.3).any() and not torch.allclose(cam_x1, cam_x0)
    # climb records CAM(x^0), CAM(x^1), CAM(x^2) and sums them
    maps = climb(model, rows, targets, cfg, steps=2)
    assert maps.shape[0] == 3 and torch.allclose(maps[1], cam_x1, atol=1e-5)


def test_mask_and_suppression_each_change_the_result(model, image):
    classes = torch.tensor([0, 2])
    x = image[None]
    base = AdvCAM(steps=3, xi=0.5, tau=0.3)
    full = base.trajectory_maps(model, x, classes)[-1]
    no_mask = AdvCAM(steps=3, xi=0.5, tau=0.3, restrict=False).trajectory_maps(model, x, classes)[-1]
    no_lam = AdvCAM(steps=3, xi=0.5, tau=0.3, lam=0.0).trajectory_maps(model, x, classes)[-1]
    no_suppress = AdvCAM(steps=3, xi=0.5, tau=0.3, suppress_others=False).trajectory_maps(model, x, classes)[-1]
    assert (full - no_mask).abs().max() > 1e-3 * full.abs().max()
    assert (full - no_suppress).abs().max() > 1e-3 * full.abs().max()
    assert torch.equal(no_mask, no_lam)  # lambda = 0 is the same switch


def test_zero_steps_is_cam(model, image):
    ms = MultiScale(scales=(1.0, 0.5), flip=True)
    cam = compute_maps(CAM(), model, image, [0, 3], ms)
    for variant in ("text", "code"):
        adv = compute_maps(AdvCAM(steps=0, variant=variant), model, image, [0, 3], ms)
        assert torch.allclose(adv, cam, atol=1e-5)


def test_no_parameter_gradient_is_allocated_and_one_pass_each_way_per_step(image):
    model = _model(requires_grad=True)  # even a model whose parameters want gradients
    forwards, backwards = [], []
    model.stem.register_forward_hook(lambda *a: forwards.append(1))
    model.stem.register_full_backward_hook(lambda *a: backwards.append(1))
    maps = compute_maps(AdvCAM(steps=3), model, image, [1, 2], MultiScale(scales=(1.0,), flip=True))
    assert maps.shape == (2, 40, 48)
    assert all(p.grad is None for p in model.parameters())
    # 2 classes x 2 flips climbed in one batch: T+1 forwards (the last only reads CAM(x^T)) and T backwards
    assert len(forwards) == 4 and len(backwards) == 3


def test_max_batch_only_bounds_memory(model, image):
    ms = MultiScale(scales=(1.0,), flip=True)
    together = compute_maps(AdvCAM(steps=2), model, image, [0, 1, 3], ms)
    one_by_one = compute_maps(AdvCAM(steps=2, max_batch=1), model, image, [0, 1, 3], ms)
    assert torch.allclose(together, one_by_one, atol=1e-5)
    assert AdvCAM(max_batch=1).config() == AdvCAM().config()


def test_code_variant_step_is_linf_normalised_and_clamped(model, image):
    cfg = AdvCAM(variant="code", code_xi=0.3)
    rows = image[None]
    mean, std = input_normalization(model, rows)
    z0 = (rows - mean) / std
    bounds = (z0.amin(dim=(1, 2, 3), keepdim=True), z0.amax(dim=(1, 2, 3), keepdim=True))
    z1, _, _, _ = climb_step(model, z0, torch.tensor([2]), cfg, mean, std, bounds=bounds)
    step = (z1 - z0).abs()
    assert step.max() <= 0.3 + 1e-5 and step.max() > 0.1
    assert z1.min() >= bounds[0].min() - 1e-6 and z1.max() <= bounds[1].max() + 1e-6
    assert cfg.schedule("id@0.5") == (13, 1.0) and cfg.schedule("id@1.0") == (27, 1.0)
    assert AdvCAM().schedule("id@0.5") == (27, 1.0)  # the text variant treats every scale alike
    maps = cfg.trajectory_maps(model, rows, torch.tensor([2]), image_key="id@0.5")
    assert maps.shape[0] == 13  # x^0 .. x^{T-1} of the half-length schedule


def test_climbing_raises_the_target_logit(model, image):
    cfg = AdvCAM(steps=4, xi=0.01, suppress_others=False, restrict=False)  # Eq. 3.2: gradient ascent on y_c
    x = image[None]
    mean, std = input_normalization(model, x)
    z = (x - mean) / std
    before = model(x)[0, 1]
    ref = ref_max = None
    for _ in range(4):
        z, _, ref, ref_max = climb_step(model, z, torch.tensor([1]), cfg, mean, std, ref, ref_max)
    after = model(z * std + mean)[0, 1]
    assert after > before


def test_logit_scaled_restriction_by_hand(model, image):
    """restrict_scale='logit': lambda * mean over all cells of M * |CAM(x^1) - CAM(x^0)| on raw CAMs (one step)."""
    cfg = AdvCAM(steps=2, xi=0.5, lam=7.0, tau=0.3, restrict_scale="logit")
    x = image[None]
    mean, std = input_normalization(model, x)
    z0 = (x - mean) / std
    c = 2
    z1, _, ref, ref_max = climb_step(model, z0, torch.tensor([c]), cfg, mean, std)
    z2, _, _, _ = climb_step(model, z1, torch.tensor([c]), cfg, mean, std, ref, ref_max)
    # by hand: step 1 (the regulariser is zero at x^0 but its gradient is not: |.| has a kink at 0, torch's 0)
    cam0 = None
    zs = [z0]
    for _ in range(2):
        z = zs[-1].clone().requires_grad_(True)
        logits, cams = model.logits_and_cams(z * std + mean)
        y = logits[0]
        cam = F.relu(cams[0, c])
        cam0 = cam.detach() if cam0 is None else cam0
        mask = (cam.detach() / cam0.max()) > 0.3
        loss = y[c] - (y.sum() - y[c]) - 7.0 * (mask * (cam - cam0).abs()).sum() / cam.numel()
        (g,) = torch.autograd.grad(loss, z)
        zs.append((z + 0.5 * g).detach())
    assert torch.allclose(z1, zs[1], atol=1e-5) and torch.allclose(z2, zs[2], atol=1e-5)


def test_logit_scaled_restriction_keeps_its_weight_when_the_cam_scale_changes(model, image):
    """Scaling the head by s scales y and the 'logit' term alike (the step's direction stays); 'max' does not."""
    import copy

    x = image[None]
    mean, std = input_normalization(model, x)
    z0 = (x - mean) / std
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.classifier.weight.mul_(10.0)
    directions = {}
    for form in ("logit", "max"):
        cfg = AdvCAM(xi=1e-3, lam=7.0, tau=0.3, restrict_scale=form)
        steps = []
        for net in (model, scaled):
            z1, _, ref, ref_max = climb_step(net, z0, torch.tensor([1]), cfg, mean, std)
            z2, _, _, _ = climb_step(net, z1, torch.tensor([1]), cfg, mean, std, ref, ref_max)
            d = (z2 - z1).flatten()
            steps.append(d / d.norm())
        directions[form] = float((steps[0] * steps[1]).sum())
    assert directions["logit"] > 0.99  # the same direction of climb at 10x the CAM scale
    assert directions["max"] < directions["logit"] - 1e-3  # the max-normalised term's relative weight moved
