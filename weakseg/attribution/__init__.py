"""Attribution methods behind one interface (see base.py); `build_method` maps CLI names to them."""

from __future__ import annotations

from typing import Any

from weakseg.attribution.advcam import AdvCAM
from weakseg.attribution.base import AttributionMethod, MultiScale, compute_maps
from weakseg.attribution.cam import CAM
from weakseg.attribution.fickle import FickleNet
from weakseg.attribution.gradcam import GradCAM
from weakseg.attribution.rib import RIB
from weakseg.attribution.rib_advcam import RIBAdvCAM

METHODS: dict[str, type[AttributionMethod]] = {
    "cam": CAM,
    "gradcam": GradCAM,
    "advcam": AdvCAM,
    "rib": RIB,
    "fickle": FickleNet,
    "rib-advcam": RIBAdvCAM,
}


def build_method(name: str, **params: Any) -> AttributionMethod:
    """Instantiate a method by name with hyper-parameters (unknown names/params raise ValueError)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    try:
        return METHODS[name](**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for method {name!r}: {e}") from e


__all__ = [
    "AttributionMethod",
    "MultiScale",
    "compute_maps",
    "build_method",
    "METHODS",
    "CAM",
    "GradCAM",
    "AdvCAM",
    "RIB",
    "FickleNet",
    "RIBAdvCAM",
]
