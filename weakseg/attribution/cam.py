"""CAM (Eq. 2.1): the classification weights applied to the last feature map, ReLU'd."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from weakseg.attribution.base import AttributionMethod
from weakseg.models.contract import CAMModel


@dataclass(frozen=True)
class CAM(AttributionMethod):
    """Class activation map w_c^T f(x) (normalisation by max happens in compute_maps)."""

    name = "cam"

    def scale_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """ReLU(w_c^T f(x)) for the requested classes: [N, K, h, w]."""
        with torch.no_grad():
            _, cams = model.logits_and_cams(x)
        return F.relu(cams[:, classes])
