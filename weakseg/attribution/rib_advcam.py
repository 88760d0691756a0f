"""RIB followed by AdvCAM (dissertation Table 4.7): AdvCAM climbing on the RIB-adapted weights of each image."""

from __future__ import annotations

from weakseg.attribution.advcam import AdvCAM
from weakseg.attribution.compose import composed_method
from weakseg.attribution.rib import RIB

RIBAdvCAM = composed_method("rib-advcam", "RIBAdvCAM", RIB, AdvCAM, at="last")
RIBAdvCAM.__module__ = __name__  # importable by name, so the method pickles (Ray workers)
