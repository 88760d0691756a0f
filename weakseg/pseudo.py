"""Pseudo labels for one image (a pure function the batch tier maps over a dataset) and the manifest
that pins a pseudo-label folder to one method configuration and one model.

Per image the outputs are `maps/<id>.npz` (float16 `maps` [K,H,W] in [0,1] and `class_ids` [K], the
1-based label values of the image's classes) and `labels/<id>.png` (VOC palette: class where the best
map exceeds the foreground threshold, background where every map is below the background threshold,
255 in between; optionally refined by the dense CRF, IRN's rule).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from weakseg.attribution.base import AttributionMethod, MultiScale, compute_maps
from weakseg.data.augment import to_tensor
from weakseg.models.contract import CAMModel
from weakseg.refine.crf import CRFConfig
from weakseg.refine.seed_label import refine_seed_label

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class LabelConfig:
    """How maps become a label PNG. Thresholds are fixed parameters, never tuned on ground truth."""

    fg_thresh: float = 0.30  # IRN's conf_fg_thres
    bg_thresh: float = 0.05  # IRN's conf_bg_thres
    crf: CRFConfig | None = None


@dataclass
class PseudoResult:
    """Outputs for one image."""

    maps: np.ndarray  # float16 [K,H,W]
    class_ids: np.ndarray  # int16 [K], 1-based label values
    label: np.ndarray  # uint8 [H,W]


def pseudo_label(
    method: AttributionMethod,
    model: CAMModel,
    image: np.ndarray,
    class_ids: list[int],
    multiscale: MultiScale,
    label_cfg: LabelConfig,
    device: torch.device,
    image_key: str = "",
) -> PseudoResult:
    """Maps and label PNG content for one uint8 HxWx3 image and its present classes (1-based ids)."""
    x = to_tensor(image).to(device)
    maps = compute_maps(method, model, x, [c - 1 for c in class_ids], multiscale, image_key=image_key)
    maps_np = maps.cpu().numpy().astype(np.float32)
    ids = np.asarray(class_ids, dtype=np.int16)
    label = refine_seed_label(image, maps_np, ids, label_cfg.fg_thresh, label_cfg.bg_thresh, label_cfg.crf)
    return PseudoResult(maps=maps_np.astype(np.float16), class_ids=ids, label=label)


def method_locations(method: AttributionMethod) -> dict[str, str]:
    """The method's configuration fields that name a place (field metadata "location", e.g. RIB's data), by name."""
    if not dataclasses.is_dataclass(method):
        return {}
    return {f.name: str(getattr(method, f.name)) for f in dataclasses.fields(method) if f.metadata.get("location")}


def build_manifest(
    method: AttributionMethod,
    multiscale: MultiScale,
    label_cfg: LabelConfig,
    model_sha256: str,
    classes: list[str],
    split: str,
    data: str,
    model: str | None = None,
    refine: dict[str, Any] | None = None,
    refine_locations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The configuration a pseudo-label folder is pinned to (no execution settings such as worker counts).

    Locations (the dataset, the classifier `model` when given, and method fields naming a place such as RIB's
    companion folder) are recorded under "data", "model" and "method_locations" but not pinned. `refine` is the
    configuration of a refiner run after the method (its labels are then the PNGs; pinned), `refine_locations`
    where its inputs are (the IRN checkpoint; recorded, not pinned). Returned in its JSON form (tuples become
    lists), so it compares equal to a manifest read back from disk.
    """
    locations = method_locations(method)
    return json.loads(
        json.dumps(
            {
                "version": MANIFEST_VERSION,
                "method": {k: v for k, v in method.config().items() if k not in locations},
                "method_locations": locations,
                "multiscale": asdict(multiscale),
                "labels": {
                    "fg_thresh": label_cfg.fg_thresh,
                    "bg_thresh": label_cfg.bg_thresh,
                    "crf": asdict(label_cfg.crf) if label_cfg.crf else None,
                },
                "model_sha256": model_sha256,
                **({"model": model} if model is not None else {}),
                **({"refine": refine, "refine_locations": refine_locations or {}} if refine is not None else {}),
                "classes": list(classes),
                "split": split,
                "data": data,
                "formats": {
                    "maps": "maps/<id>.npz: float16 maps [K,H,W] in [0,1], int16 class_ids [K] (1-based label values)",
                    "labels": "labels/<id>.png: VOC palette PNG, 0 background, 1..C classes, 255 uncertain",
                },
            }
        )
    )


PINNED_KEYS = ("version", "method", "multiscale", "labels", "model_sha256", "classes", "split", "refine")


def dotted_diff(existing: Any, wanted: Any, prefix: str) -> list[str]:
    """The dotted paths (prefix.key.key) of the leaves where two JSON values differ; [prefix] for unlike leaves."""
    if isinstance(existing, dict) and isinstance(wanted, dict):
        keys = sorted(set(existing) | set(wanted))
        return [d for k in keys for d in dotted_diff(existing.get(k), wanted.get(k), f"{prefix}.{k}")]
    return [] if existing == wanted else [prefix]


def manifest_mismatch(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Pinned manifest entries that differ (empty when the folder can be resumed into); a differing refiner is
    named down to its setting ("refine.par.num_iter").

    Locations are recorded but not pinned, so a dataset (or RIB's companion folder) mounted elsewhere can be
    resumed; a manifest written before locations were set apart, with them inside "method", compares the same.
    A manifest without "refine" (written before the refine stage existed) compares as refine None.
    """
    unpinned = set(wanted.get("method_locations") or {}) | set(existing.get("method_locations") or {})

    def pinned(manifest: dict[str, Any], key: str) -> Any:
        value = manifest.get(key)
        if key == "method" and isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in unpinned}
        return value

    return [
        d
        for k in PINNED_KEYS
        for d in (dotted_diff(pinned(existing, k), pinned(wanted, k), k) if k == "refine" else [k])
        if pinned(existing, k) != pinned(wanted, k)
    ]
