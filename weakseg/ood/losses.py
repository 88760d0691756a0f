"""W-OoD losses (Eqs. 4.1-4.4): distances to cluster centres, the top-tau% closest OoD clusters, L_d, and the
classification loss with BCE against the zero vector on OoD images.

The text's L_d for one in-distribution image x with multi-hot y is
    L_d = sum_{c: y_c=1} d(x, P^in_c) - sum_{k in top-tau%} d(x, P^ood_k),   d = ||z(x) - p||_2   (4.1, 4.2)
averaged over the batch. The authors' code differs (WoodLossConfig.code()): the pull term is a mean over the
B x C matrix times C/K ("20/K"), the push term a mean over the B x K matrix, and the closest tau% are chosen
over the whole batch's distance matrix rather than per image.

Every W-OoD default lives here: the settings that depend on the variant (VARIANT_LOSS, VARIANT_TRAINING) and
DEFAULT_VARIANT, the authors' code, which WoodLossConfig's and training.wood.WoodJob's field defaults, the CLI
and the W-OoD benchmark all follow (the text's sums are unbounded below on raw features and diverged on both
benchmarks; README). WoodLossConfig.text() is the dissertation's text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from weakseg.errors import WeaksegError

WOOD_VARIANTS = ("code", "text")
DEFAULT_VARIANT = "code"  # the authors' code (see the module docstring)

# the loss settings that differ between the variants (WoodLossConfig fields)
VARIANT_LOSS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "text": MappingProxyType({"ood_weight": 1.0, "reduction": "sum", "in_scale": "one", "scope": "image"}),
        "code": MappingProxyType(
            {"ood_weight": 0.25, "reduction": "mean", "in_scale": "classes_over_k", "scope": "batch"}
        ),
    }
)
# the training choices beside the loss (training.wood.WoodJob fields): the text recomputes the centres every epoch
# and takes OoD images as they are; the code computes the centres once before training and takes one
# anti-adversarial step on OoD images
VARIANT_TRAINING: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "text": MappingProxyType({"centre_every": 1, "adv_steps": 0}),
        "code": MappingProxyType({"centre_every": 0, "adv_steps": 1}),
    }
)
CODE_TRAINING = VARIANT_TRAINING["code"]
TEXT_TRAINING = VARIANT_TRAINING["text"]
_DEFAULT_LOSS = VARIANT_LOSS[DEFAULT_VARIANT]


def variant_training(variant: str) -> dict[str, int]:
    """The WoodJob settings of a variant ("code" or "text"), as keyword arguments."""
    if variant not in VARIANT_TRAINING:
        raise WeaksegError(f"W-OoD: unknown variant {variant!r}; choose from {', '.join(WOOD_VARIANTS)}")
    return dict(VARIANT_TRAINING[variant])


@dataclass(frozen=True)
class WoodLossConfig:
    """Hyper-parameters of L = L_cls + lambda L_d; the defaults are DEFAULT_VARIANT's (the authors' code)."""

    lam: float = 0.007  # lambda of Eq. 4.4
    tau: float = 0.2  # share of the OoD clusters counted as "closest" in Eq. 4.2
    k_max: int = 50  # K = min(k_max, number of OoD images)
    ood_weight: float = _DEFAULT_LOSS["ood_weight"]  # weight of BCE(F(x_ood), 0) in Eq. 4.3 (text 1, code 0.25)
    pull: bool = True  # L_d's in-distribution term (Table 4.5 "L_d on D_in")
    push: bool = True  # L_d's OoD term (Table 4.5 "L_d on D_ood")
    distance: str = "euclidean"  # euclidean (Eq. 4.1) | squared
    reduction: str = _DEFAULT_LOSS["reduction"]  # sum (Eq. 4.2) | mean (code: means over the B x C and B x K matrices)
    in_scale: str = _DEFAULT_LOSS["in_scale"]  # one (text) | classes_over_k (code: pull term times |C|/K)
    scope: str = _DEFAULT_LOSS[
        "scope"
    ]  # image (text: top-tau% per image) | batch (code: over the batch's whole matrix)
    features: str = "raw"  # raw z (text and code) | unit: z / ||z|| for L_d and the centres (bounded distances)

    def validate(self) -> WoodLossConfig:
        """Raise WeaksegError on a value outside its range; return self."""
        checks = [
            (self.lam >= 0, "lambda must be >= 0"),
            (0 < self.tau <= 1, "tau must be in (0, 1]"),
            (self.k_max >= 1, "K must be >= 1"),
            (self.ood_weight >= 0, "the OoD loss weight must be >= 0"),
            (self.distance in ("euclidean", "squared"), "distance must be euclidean or squared"),
            (self.reduction in ("sum", "mean"), "reduction must be sum or mean"),
            (self.in_scale in ("one", "classes_over_k"), "in-scale must be one or classes_over_k"),
            (self.scope in ("image", "batch"), "scope must be image or batch"),
            (self.features in ("raw", "unit"), "features must be raw or unit"),
        ]
        for ok, msg in checks:
            if not ok:
                raise WeaksegError(f"W-OoD: {msg}")
        return self

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> WoodLossConfig:
        """The loss of variant `name` ("code" or "text", VARIANT_LOSS) with `overrides` on top."""
        if name not in VARIANT_LOSS:
            raise WeaksegError(f"W-OoD: unknown variant {name!r}; choose from {', '.join(WOOD_VARIANTS)}")
        return replace(cls(), **{**VARIANT_LOSS[name], **overrides})

    @classmethod
    def code(cls, **overrides: Any) -> WoodLossConfig:
        """The authors' code's choices (OoD weight 0.25, mean reduction, |C|/K pull scale, batch-wide top-tau)."""
        return cls.variant("code", **overrides)

    @classmethod
    def text(cls, **overrides: Any) -> WoodLossConfig:
        """The dissertation's text (OoD weight 1, sums over classes and clusters, top-tau per image)."""
        return cls.variant("text", **overrides)

    def to_dict(self) -> dict:
        """Plain-dict form for run records; `features` appears only when not raw (records made before it existed
        keep their identity)."""
        d = asdict(self)
        if d["features"] == "raw":
            del d["features"]
        return d


def embed(z: torch.Tensor, features: str = "raw") -> torch.Tensor:
    """The features L_d and the centres work on: z itself, or z scaled to unit L2 norm (features="unit").

    With raw features and more pushed clusters than pulled classes, L_d falls without bound as z is scaled
    up (every distance grows like ||z||), which a fine-tune can exploit; on the unit sphere it is bounded.
    """
    return F.normalize(z, dim=1) if features == "unit" else z


def num_clusters(n_ood: int, k_max: int = 50) -> int:
    """K = min(k_max, number of OoD images); at least one OoD image is needed."""
    if n_ood < 1:
        raise WeaksegError("W-OoD needs at least one OoD image")
    return min(k_max, n_ood)


def cluster_distances(z: torch.Tensor, centres: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """d(x, P_k) for every row of z [B, D] and centre [K, D]: ||z - p_k||_2 (Eq. 4.1) or its square, [B, K]."""
    sq = (z[:, None, :] - centres[None, :, :].to(z.dtype)).pow(2).sum(-1)
    if distance == "squared":
        return sq
    return sq.clamp_min(1e-12).sqrt()  # finite gradient where z sits on a centre


def top_tau_count(k: int, tau: float) -> int:
    """|K| of Eq. 4.2: the number of OoD clusters among the top tau share (ceil, at least one)."""
    return max(1, min(k, math.ceil(tau * k - 1e-9)))


def top_tau_mask(d: torch.Tensor, tau: float, scope: str = "image") -> torch.Tensor:
    """Boolean mask [B, K] of the closest tau share of clusters: per row (image), or over the whole matrix (batch)."""
    b, k = d.shape
    if scope == "batch":
        n = top_tau_count(b * k, tau)
        idx = torch.topk(d.detach().flatten(), n, largest=False, sorted=False).indices
        mask = torch.zeros(b * k, dtype=torch.bool, device=d.device)
        mask[idx] = True
        return mask.view(b, k)
    n = top_tau_count(k, tau)
    idx = torch.topk(d.detach(), n, dim=1, largest=False, sorted=False).indices
    return torch.zeros_like(d, dtype=torch.bool).scatter_(1, idx, True)


def distance_loss(
    z: torch.Tensor,
    y: torch.Tensor,
    in_centres: torch.Tensor | None,
    ood_centres: torch.Tensor | None,
    cfg: WoodLossConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_d (Eq. 4.2) averaged over the batch of in-distribution features z [B, D] with labels y [B, C]."""
    z = embed(z, cfg.features)
    zero = z.sum() * 0.0
    pull, push = zero, zero
    if cfg.pull:
        if in_centres is None:
            raise WeaksegError("W-OoD: the pull term needs in-distribution centres")
        d_in = cluster_distances(z, in_centres, cfg.distance) * (y > 0)
        pull = d_in.mean(1) if cfg.reduction == "mean" else d_in.sum(1)
        if cfg.in_scale == "classes_over_k":
            pull = pull * (in_centres.shape[0] / (ood_centres.shape[0] if ood_centres is not None else cfg.k_max))
        pull = pull.mean()
    if cfg.push:
        if ood_centres is None:
            raise WeaksegError("W-OoD: the push term needs OoD centres")
        d_ood = cluster_distances(z, ood_centres, cfg.distance)
        sel = d_ood * top_tau_mask(d_ood, cfg.tau, cfg.scope)
        push = (sel.mean(1) if cfg.reduction == "mean" else sel.sum(1)).mean()
    loss = pull - push
    return loss, {"l_d": float(loss.detach()), "pull": float(pull.detach()), "push": float(push.detach())}


def classification_loss(
    logits_in: torch.Tensor, y: torch.Tensor, logits_ood: torch.Tensor | None, ood_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_cls (Eq. 4.3): class-mean BCE against y on in-distribution logits plus BCE against 0 on OoD logits."""
    cls_in = F.multilabel_soft_margin_loss(logits_in, y)
    if logits_ood is None or ood_weight == 0 or logits_ood.shape[0] == 0:
        return cls_in, {"cls_in": float(cls_in.detach()), "cls_ood": 0.0}
    cls_ood = F.multilabel_soft_margin_loss(logits_ood, torch.zeros_like(logits_ood))
    return cls_in + ood_weight * cls_ood, {"cls_in": float(cls_in.detach()), "cls_ood": float(cls_ood.detach())}


def wood_loss(
    logits_in: torch.Tensor,
    z_in: torch.Tensor,
    y: torch.Tensor,
    logits_ood: torch.Tensor | None,
    in_centres: torch.Tensor | None,
    ood_centres: torch.Tensor | None,
    cfg: WoodLossConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = L_cls + lambda L_d (Eq. 4.4) with the parts as floats."""
    cls, parts = classification_loss(logits_in, y, logits_ood, cfg.ood_weight)
    if cfg.lam > 0 and (cfg.pull or cfg.push):
        ld, dparts = distance_loss(z_in, y, in_centres, ood_centres, cfg)
        return cls + cfg.lam * ld, {**parts, **dparts}
    return cls, parts
