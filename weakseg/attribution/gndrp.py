"""Global non-discriminative region pooling (GNDRP, dissertation 3.4.3) and its GAP counterpart.

GNDRP(T) = mean of T over U_tau = {u : CAM(u) <= tau}, with CAM the ReLU'd class map divided by its maximum
(Eq. 2.1). Because the classification layer is linear and bias-free, pooling the features over U_tau and then
classifying equals pooling the raw class map over U_tau, which is what is computed here, per class. The set
U_tau is treated as a constant (no gradient flows through the selection).

`mode="masked_mean"` is the authors' code: the raw map with the high locations zeroed, averaged over all h*w
locations (their normaliser is the raw map's own maximum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def low_region(cams: torch.Tensor, tau: float, mode: str = "subset") -> torch.Tensor:
    """Bool [N,C,h,w]: the locations whose normalised CAM is <= tau (subset) or < tau (masked_mean, as the code)."""
    with torch.no_grad():
        if mode == "subset":
            pos = F.relu(cams)
            norm = pos / pos.flatten(2).amax(dim=2).clamp_min(1e-5)[..., None, None]
            return norm <= tau
        norm = cams / cams.flatten(2).amax(dim=2)[..., None, None]
        return norm < tau


def gndrp(cams: torch.Tensor, tau: float, mode: str = "subset") -> torch.Tensor:
    """GNDRP logits [N,C] of raw class maps [N,C,h,w] (mode subset: the dissertation; masked_mean: the code)."""
    if mode not in ("subset", "masked_mean"):
        raise ValueError(f"unknown GNDRP mode {mode!r}; use subset or masked_mean")
    keep = low_region(cams, tau, mode).to(cams.dtype)
    total = (cams * keep).sum(dim=(2, 3))
    if mode == "subset":
        return total / keep.sum(dim=(2, 3)).clamp_min(1.0)
    return total / (cams.shape[-1] * cams.shape[-2])


def gap(cams: torch.Tensor) -> torch.Tensor:
    """Global average pooling of raw class maps: the classifier's own logits [N,C]."""
    return cams.mean(dim=(2, 3))
