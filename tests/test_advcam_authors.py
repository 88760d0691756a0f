"""AdvCAM's code variant against a transcription of the authors' loop (jbeomlee93/AdvCAM, obtain_CAM_masking.py).

The reference below re-does their arithmetic step by step with plain autograd: Grad-CAM at the feature map with
their `gap2d_pos` channel weights (summed gradients divided by the count of positive gradient entries in the whole
tensor), the map `regions` that both the regulariser and the output use, their loss
`-(-2 y_c + sum_k y_k) - coeff * sum(|regions - init| * mask)`, and their step `x + eps * g / max|g|` clamped to the
current image's min and max. Without flip it must equal `AdvCAM(variant="code", code_clamp="current")`.
The comparison runs in float64: in float32 the two summation orders agree to 1e-7 for three steps, and then a max-pool
or ReLU switch amplifies the rounding (1e-3 in the input at step four on this random network), which says nothing
about the formulas.
"""

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import random_bn_classifier

from weakseg.attribution import AdvCAM
from weakseg.attribution.advcam import code_scales, head_positive_counts, input_normalization


def _gap2d_pos(grads: torch.Tensor) -> torch.Tensor:
    """Their channel weights [B,D]: spatial sums of the gradients over the count of positive entries of all of them."""
    return grads.flatten(2).sum(-1) / ((grads > 0).sum() + 1e-12)


def _their_gradcam(model, x_norm: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw CAMs [B,C,h,w] of the whole head, Grad-CAM map [B,h,w] of class c) as their GradCAM wrapper makes them."""
    mean, std = model.normalize.mean, model.normalize.std
    feats = model.features(x_norm * std + mean)  # their networks take the normalised image
    cams = F.conv2d(feats, model.classifier.weight)
    score = F.relu(cams).flatten(2).sum(-1)  # their logits_vec: gsp2d(relu(.))
    (grads,) = torch.autograd.grad(score[:, c].sum(), feats, retain_graph=True)  # a backward hook: no graph kept
    weights = _gap2d_pos(grads)
    return cams, F.relu((feats * weights[:, :, None, None]).sum(dim=1))


def authors_maps(model, x: torch.Tensor, c: int, steps: int, *, eps: float = 0.08, coeff: float = 7.0,
                 score_th: float = 0.5) -> torch.Tensor:
    """Their accumulated map cam_all_classes[c] [h,w] for one image x [1,3,H,W] in [0,1] (no flip, weight 1)."""
    mean, std = input_normalization(model, x)
    img = ((x - mean) / std).detach()
    total, init_cam = None, None
    for it in range(steps):
        img.requires_grad_(True)
        cams, regions = _their_gradcam(model, img, c)
        if it == 0:
            init_cam = regions.detach()
        total = regions[0].detach() if total is None else total + regions[0].detach()
        logit = F.relu(cams).mean(dim=(2, 3))  # gap2d(relu(outputs))
        logit_loss = -2 * logit[:, c].sum() + logit.sum()
        mask = (regions / regions.max() > score_th).float().detach()
        l_ad = ((regions - init_cam).abs() * mask).sum()
        loss = -logit_loss - l_ad * coeff
        (grad,) = torch.autograd.grad(loss, img)
        with torch.no_grad():
            lo, hi = img.min(), img.max()
            img = torch.clamp(img + eps * grad / (grad.abs().max() + 1e-12), lo, hi).detach()
    return total


@pytest.fixture(scope="module")
def model():
    return random_bn_classifier().double()


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 48, 56, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _ours(model, x, c, scale_key, **kw):
    cfg = AdvCAM(steps=5, variant="code", code_clamp="current", **kw)
    return cfg.scale_maps(model, x, torch.tensor([c]), image_key=f"img@{scale_key}")[0, 0]


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("c", [0, 2])
def test_code_variant_equals_the_authors_loop(model, image, scale, c):
    x = image[None]
    if scale != 1.0:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    theirs = authors_maps(model, x, c, steps=5)
    ours = _ours(model, x, c, scale)
    k_pos = int((model.classifier.weight[c].flatten() > 0).sum())
    # their map is ReLU(CAM) / K+_c (no flip): the same sum up to that factor, and the same after normalisation
    assert torch.allclose(ours / k_pos, theirs, rtol=1e-6, atol=1e-9)
    assert (ours / ours.max() - theirs / theirs.max()).abs().max() < 1e-4


def test_the_old_fixed_scale_does_not_match_their_loop(model, image):
    """5e-4 was the scale of a head with ~1000 positive weights; this head has ~256, and the trajectory differs."""
    x = image[None]
    theirs = authors_maps(model, x, 2, steps=5)
    old = _ours(model, x, 2, 1.0, code_map_scale=5e-4)
    assert (old / old.max() - theirs / theirs.max()).abs().max() > 1e-3


def test_gap2d_pos_gradcam_is_relu_cam_over_positive_weights_by_hand():
    """Their Grad-CAM on a tiny bias-free 1x1 head: ReLU(CAM_c) * P_b / (K+_c * sum P), P_b = positive cells."""
    torch.manual_seed(0)
    w = torch.tensor([[0.5, -1.0, 2.0, 0.0], [-0.3, 0.7, 0.2, 0.1]])  # K+ = 2 and 3
    feats = torch.randn(2, 4, 3, 3, requires_grad=True)
    for c, k_pos in ((0, 2), (1, 3)):
        cams = torch.einsum("kd,bdhw->bkhw", w, feats)
        (grads,) = torch.autograd.grad(F.relu(cams)[:, c].sum(), feats, retain_graph=True)
        gcam = F.relu((feats * _gap2d_pos(grads)[:, :, None, None]).sum(1)).detach()
        positive = (cams[:, c] > 0).float()
        p_b = positive.flatten(1).sum(1)
        expected = F.relu(cams[:, c]).detach() * (p_b / (k_pos * p_b.sum()))[:, None, None]
        assert torch.allclose(gcam, expected, atol=1e-6)
        # a batch of one image: the factor is 1 / K+_c
        (g1,) = torch.autograd.grad(F.relu(cams[:1, c]).sum(), feats, retain_graph=True)
        one = F.relu((feats[:1] * _gap2d_pos(g1[:1])[:, :, None, None]).sum(1)).detach()
        assert torch.allclose(one, F.relu(cams[:1, c]).detach() / k_pos, atol=1e-6)


def test_scale_comes_from_the_head_per_class():
    model = random_bn_classifier()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.weight[0, :10] = 1.0
        model.classifier.weight[1, :3] = 0.5
        model.classifier.weight[1, 3:8] = -0.5
        model.classifier.weight[2:, :200] = 0.1
    assert head_positive_counts(model).tolist() == [10, 3, 200, 200]
    scales = code_scales(AdvCAM(variant="code"), model, torch.tensor([1, 0, 2]))
    assert torch.allclose(scales.flatten(), torch.tensor([1 / 3, 1 / 10, 1 / 200]))
    fixed = code_scales(AdvCAM(variant="code", code_map_scale=2e-3), model, torch.tensor([1, 0]))
    assert torch.allclose(fixed.flatten(), torch.tensor([2e-3, 2e-3]))


def test_half_scale_gets_half_the_steps_at_the_same_weight():
    """Their mul_for_scale is set in the 0.5 branch (which runs first) and carries over: one weight for all scales."""
    cfg = AdvCAM(variant="code")
    assert cfg.schedule("id@0.5") == (13, 1.0) and cfg.schedule("id@1.0") == (27, 1.0)
    assert AdvCAM(variant="code", steps=8).schedule("id@0.5") == (5, 1.0)
    assert AdvCAM(variant="code", steps=5).schedule("id@0.5") == (5, 1.0)


def test_a_head_without_1x1_weights_needs_a_fixed_scale():
    fickle = random_bn_classifier()
    fickle.classifier = torch.nn.Conv2d(512, 4, 3, padding=1, bias=False)  # a k x k head: gap2d_pos has no closed form
    with pytest.raises(ValueError, match="code_map_scale"):
        code_scales(AdvCAM(variant="code"), fickle, torch.tensor([0]))
    assert code_scales(AdvCAM(variant="code", code_map_scale=1e-3), fickle, torch.tensor([0])).item() == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="code_map_scale"):
        AdvCAM(variant="code", code_map_scale=0.0)


def test_config_names_only_the_fields_its_variant_reads():
    text, code = AdvCAM().config(), AdvCAM(variant="code").config()
    assert "code_map_scale" not in text and "code_xi" not in text and "xi" in text
    assert code["code_map_scale"] is None and code["code_clamp"] == "initial" and "xi" not in code
    assert AdvCAM(code_xi=0.5).config() == text  # a code-only field does not change a text-variant run
