"""W-OoD losses on hand-made features: L_d equals Eq. 4.2, the top-tau% selection, K, and BCE against zeros."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from weakseg.errors import WeaksegError
from weakseg.ood.losses import (WoodLossConfig, classification_loss, distance_loss, num_clusters,
                                top_tau_count, top_tau_mask, wood_loss)


def _hand_made():
    """Two 2-d features, 3 class centres, 5 OoD centres with easy distances."""
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    p_in = torch.tensor([[3.0, 4.0], [3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    p_ood = torch.tensor([[1.0, 0.0], [0.0, 2.0], [6.0, 8.0], [-3.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    return z, y, p_in, p_ood


def _euclid(a, b):
    return math.dist(a.tolist(), b.tolist())


def test_distance_loss_equals_the_formula_on_hand_made_features():
    z, y, p_in, p_ood = _hand_made()
    cfg = WoodLossConfig.text(tau=0.4)  # 40% of K=5 -> the 2 closest OoD clusters
    loss, parts = distance_loss(z, y, p_in, p_ood, cfg)
    expected = []
    for b in range(2):
        pull = sum(_euclid(z[b], p_in[c]) for c in range(3) if y[b, c] == 1)
        push = sum(sorted(_euclid(z[b], p) for p in p_ood)[:2])
        expected.append(pull - push)
    # image 0: pull 5 + 1 = 6, push 1 + 2 = 3; image 1: pull 4, push sqrt(13) (to 0,2) + sqrt(20) (to 1,0)
    assert expected[0] == pytest.approx(3.0)
    assert float(loss) == pytest.approx(sum(expected) / 2, abs=1e-9)
    assert parts["pull"] == pytest.approx((6 + 4) / 2) and parts["push"] == pytest.approx((3 + math.sqrt(13) + math.sqrt(20)) / 2)


def test_code_variant_reduces_by_means_and_scales_the_pull_term():
    z, y, p_in, p_ood = _hand_made()
    cfg = WoodLossConfig.code(tau=0.4)
    loss, parts = distance_loss(z, y, p_in, p_ood, cfg)
    # by hand: pull = mean over the 2 x 3 matrix of y * d (5, 0, 1 / 0, 4, 0) times |C|/K = 3/5;
    # push = the 4 smallest (40% of the batch's 2 x 5 entries) over 10: image 0 has 1, 2, 3; image 1 sqrt(13)
    d_ood = [[1.0, 2.0, 10.0, 3.0, 10.0], [math.sqrt(20), math.sqrt(13), 5.0, math.sqrt(52), math.sqrt(65)]]
    assert all(_euclid(z[b], p_ood[k]) == pytest.approx(d_ood[b][k]) for b in range(2) for k in range(5))
    pull = (5 + 1 + 4) / 6 * (3 / 5)
    push = (1 + 2 + 3 + math.sqrt(13)) / 10
    assert parts["pull"] == pytest.approx(pull, abs=1e-12) and parts["push"] == pytest.approx(push, abs=1e-12)
    assert float(loss) == pytest.approx(pull - push, abs=1e-12)
    squared, _ = distance_loss(z, y, p_in, p_ood, WoodLossConfig.code(tau=0.4, distance="squared"))
    assert float(squared) == pytest.approx((25 + 1 + 16) / 6 * (3 / 5) - (1 + 4 + 9 + 13) / 10, abs=1e-12)


def test_raw_sums_fall_without_bound_when_z_is_scaled_and_unit_features_do_not():
    """The text's L_d with more pushed clusters than pulled classes is lowered by scaling z up; on unit features
    it is scale invariant and bounded by the counts (distances <= 2)."""
    z, y, p_in, p_ood = _hand_made()
    z = z + torch.tensor([1.0, 1.0], dtype=torch.float64)  # no zero row (a direction for every image)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)  # one class each, 3 pushed clusters
    raw = WoodLossConfig.text(tau=0.6)
    values = [float(distance_loss(s * z, y, p_in, p_ood, raw)[0]) for s in (1.0, 10.0, 100.0, 1000.0)]
    assert values == sorted(values, reverse=True) and values[-1] < -1000
    unit = WoodLossConfig.text(tau=0.6, features="unit")
    u_in, u_ood = F.normalize(p_in, dim=1), F.normalize(p_ood, dim=1)
    scaled = [float(distance_loss(s * z, y, u_in, u_ood, unit)[0]) for s in (1.0, 10.0, 1000.0)]
    assert scaled == pytest.approx([scaled[0]] * 3, abs=1e-9) and -3 * 2 <= scaled[0] <= 2
    loss, _ = distance_loss(z, y, u_in, u_ood, unit)
    expected = []  # by hand: the text's L_d of z / ||z|| against the unit centres, top 60% of 5 = 3 clusters per image
    for b in range(2):
        zb = z[b] / math.hypot(*z[b].tolist())
        pull = sum(_euclid(zb, u_in[c]) for c in range(3) if y[b, c] == 1)
        expected.append(pull - sum(sorted(_euclid(zb, p) for p in u_ood)[:3]))
    assert float(loss) == pytest.approx(sum(expected) / 2, abs=1e-12)


def test_features_option_is_validated_and_kept_out_of_old_records():
    with pytest.raises(WeaksegError, match="features"):
        WoodLossConfig(features="cosine").validate()
    assert "features" not in WoodLossConfig().to_dict()
    assert WoodLossConfig(features="unit").to_dict()["features"] == "unit"


def test_top_tau_selection_picks_the_nearest_clusters():
    d = torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 8.0, 7.0, 6.0, 0.5]])
    mask = top_tau_mask(d, 0.2)  # 20% of 10 -> 2
    assert mask.sum() == 2 and mask[0, 9] and mask[0, 1]
    mask = top_tau_mask(d, 0.35)  # ceil(3.5) -> 4
    assert torch.nonzero(mask[0])[:, 0].tolist() == [1, 3, 4, 9]
    assert top_tau_mask(d, 0.01).sum() == 1  # at least one cluster
    batch = torch.tensor([[1.0, 9.0], [2.0, 0.1]])
    assert top_tau_mask(batch, 0.5, scope="batch").tolist() == [[True, False], [False, True]]
    assert top_tau_mask(batch, 0.5, scope="image").tolist() == [[True, False], [False, True]]
    assert top_tau_mask(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 0.5, scope="batch").tolist() == [[True, True], [False, False]]


def test_k_shrinks_when_there_are_fewer_ood_images_than_clusters():
    assert num_clusters(500) == 50
    assert num_clusters(12) == 12
    assert num_clusters(12, k_max=5) == 5
    with pytest.raises(WeaksegError):
        num_clusters(0)
    assert top_tau_count(12, 0.2) == 3 and top_tau_count(50, 0.2) == 10


def test_ood_images_contribute_bce_against_zeros():
    torch.manual_seed(0)
    logits_in, y = torch.randn(3, 4), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]])
    logits_ood = torch.randn(2, 4, requires_grad=True)
    total, parts = classification_loss(logits_in, y, logits_ood, ood_weight=0.25)
    bce_zero = F.binary_cross_entropy_with_logits(logits_ood, torch.zeros(2, 4))  # mean over images and classes
    assert parts["cls_ood"] == pytest.approx(float(bce_zero.detach()), rel=1e-6)
    assert float(total.detach()) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits_in, y) + 0.25 * bce_zero.detach()), rel=1e-6)
    total.backward()
    assert (logits_ood.grad > 0).all()  # every OoD logit is pushed down, towards p = 0
    without, _ = classification_loss(logits_in, y, None)
    assert float(without) == pytest.approx(parts["cls_in"], rel=1e-6)


def test_total_loss_adds_lambda_times_l_d_and_gradients_reach_the_features():
    z, y, p_in, p_ood = _hand_made()
    z = z.clone().requires_grad_(True)
    logits = torch.zeros(2, 3, dtype=torch.float64)
    cfg = WoodLossConfig.text(lam=0.5, tau=0.4)
    loss, parts = wood_loss(logits, z, y, None, p_in, p_ood, cfg)
    # by hand: BCE at logit 0 is log 2 for every entry; L_d as in the first test: (3 + 4 - sqrt(13) - sqrt(20)) / 2
    l_d = (3 + 4 - math.sqrt(13) - math.sqrt(20)) / 2
    assert parts["cls_in"] == pytest.approx(math.log(2), abs=1e-12) and parts["l_d"] == pytest.approx(l_d, abs=1e-12)
    assert float(loss.detach()) == pytest.approx(math.log(2) + 0.5 * l_d, abs=1e-12)
    logits_ood = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)
    with_ood, parts = wood_loss(logits, z, y, logits_ood, p_in, p_ood, cfg)
    bce0 = sum(math.log1p(math.exp(v)) for v in (2.0, -1.0, 0.5)) / 3  # -log(1 - sigmoid(v)), mean over classes
    assert parts["cls_ood"] == pytest.approx(bce0, abs=1e-12)
    assert float(with_ood.detach()) == pytest.approx(math.log(2) + 1.0 * bce0 + 0.5 * l_d, abs=1e-12)  # text: weight 1
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    off = wood_loss(logits, z, y, None, None, None, WoodLossConfig(pull=False, push=False))[1]
    assert "l_d" not in off
    with pytest.raises(WeaksegError):
        WoodLossConfig(tau=0).validate()
