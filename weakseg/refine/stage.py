"""The refine stage: a refiner chosen by name, built on each worker, and the manifest of a refined label folder.

A `RefineSpec` (PAR's settings, or IRN's walk settings and the IRN checkpoint's location) is what a job ships to
its workers; `build_refiner` turns it into a `Refiner` on a device, refusing a checkpoint that is not an IRN or
was trained on other classes. `refine_label` runs it on an image's maps as maps/<id>.npz holds them (float16,
widened to float32), so a label is the same whether the refiner runs right after the method (`weakseg pseudo
--refine`) or later on the folder the method wrote (`weakseg refine`).

A refined folder has the pseudo-label folder's format: maps/<id>.npz are the source folder's files copied byte
for byte (the method's maps: `weakseg eval seeds` scores the seeds there as on the source), labels/<id>.png are
the refiner's labels (`weakseg eval labels` scores the masks). Its manifest (`refine_manifest`) embeds the
source's manifest and its sha256 and pins the refiner's configuration (the IRN checkpoint by its sha256).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from weakseg.errors import CheckpointError, DataError, WeaksegError
from weakseg.models.checkpoint import read_metadata
from weakseg.pseudo import MANIFEST_VERSION, dotted_diff, manifest_mismatch
from weakseg.refine.irn_refiner import IRNRefineConfig, IRNRefiner
from weakseg.refine.refiner import PARRefiner, Refiner

REFINERS = ("irn", "par")
REFINE_KIND = "refine"  # the "kind" of a refined folder's manifest (a `weakseg pseudo` manifest has none)


@dataclass(frozen=True)
class RefineSpec:
    """A refiner by its settings: PAR (`PARRefiner`: PAR's settings, the background score) or IRN's walk
    (`IRNRefineConfig`, with `irn_model` the checkpoint: a run folder or .safetensors)."""

    settings: PARRefiner | IRNRefineConfig
    irn_model: str | None = None

    @property
    def name(self) -> str:
        """ "par" or "irn"."""
        return "par" if isinstance(self.settings, PARRefiner) else "irn"

    def validate(self) -> None:
        """WeaksegError for settings out of range or an IRN spec without a checkpoint."""
        if isinstance(self.settings, IRNRefineConfig):
            if not self.irn_model:
                raise WeaksegError("the irn refiner needs an IRN checkpoint (--irn RUN, a `weakseg train irn` run)")
            try:
                self.settings.validate()
            except ValueError as e:
                raise WeaksegError(f"irn refiner: {e}") from e

    def locations(self) -> dict[str, str]:
        """Where the refiner's inputs are ({"irn": path} for IRN): recorded in a manifest, not pinned."""
        return {"irn": str(self.irn_model)} if self.irn_model else {}


def check_irn(path: str, classes: list[str] | None) -> None:
    """CheckpointError unless `path` is an IRN checkpoint trained on `classes` (when given); reads metadata only."""
    meta = read_metadata(path)
    if meta["kind"] != "irn":
        raise CheckpointError(f"{path}: is a {meta['kind']} checkpoint, not an IRN (make one with `weakseg train irn`)")
    trained = list(meta["config"].get("classes") or [])
    if classes is not None and trained and trained != list(classes):
        raise CheckpointError(
            f"{path}: the IRN was trained on classes {trained[:4]}..., the maps are of {classes[:4]}..."
        )


def build_refiner(spec: RefineSpec, device: torch.device | str, classes: list[str] | None = None) -> Refiner:
    """The refiner of a spec on `device`; an IRN is checked against the maps' `classes` (when given) before loading."""
    spec.validate()
    if isinstance(spec.settings, PARRefiner):
        return dataclasses.replace(spec.settings, device=device)
    assert spec.irn_model is not None  # validate() refuses an IRN spec without one
    check_irn(spec.irn_model, classes)
    return IRNRefiner.from_checkpoint(spec.irn_model, spec.settings, device)


def refine_label(refiner: Refiner, image: np.ndarray, maps: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """The refined label uint8 HxW of an image from its stored maps (float16 [K,H,W], widened to float32)."""
    return refiner.refine(image, np.asarray(maps).astype(np.float32), np.asarray(class_ids))


def decode_maps(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(maps [K,H,W], class_ids [K]) from the bytes of a maps/<id>.npz file; DataError naming it if unreadable."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return np.asarray(z["maps"]), np.asarray(z["class_ids"])
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{name}: unreadable maps file ({e})") from e


def refine_manifest(
    source: dict[str, Any],
    source_sha256: str,
    source_location: str,
    refiner_config: dict[str, Any],
    refine_locations: dict[str, str],
    data: str,
) -> dict[str, Any]:
    """The manifest of a refined folder, in JSON form: the refiner's configuration (pinned), the source folder's
    manifest embedded with its sha256 (pinned by its own pinned entries, so a moved dataset still resumes), and
    the classes, split, data and classifier copied from it (so the folder reads like any pseudo-label folder)."""
    return json.loads(
        json.dumps(
            {
                "version": MANIFEST_VERSION,
                "kind": REFINE_KIND,
                "refine": refiner_config,
                "refine_locations": refine_locations,
                "source": source,
                "source_sha256": source_sha256,
                "source_location": source_location,
                "classes": source.get("classes"),
                "split": source.get("split"),
                "data": data,
                **({"model": source["model"]} if source.get("model") else {}),
                "formats": {
                    "maps": "maps/<id>.npz: the source folder's maps copied byte for byte (float16 maps [K,H,W] in "
                    "[0,1], int16 class_ids [K])",
                    "labels": "labels/<id>.png: VOC palette PNG, the refiner's label (0 background, 1..C classes)",
                },
            }
        )
    )


def folder_mismatch(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Pinned entries that differ between two label-folder manifests of either kind (pseudo or refined)."""
    if existing.get("kind") != wanted.get("kind"):
        return ["kind"]
    if wanted.get("kind") != REFINE_KIND:
        return manifest_mismatch(existing, wanted)
    diff = [k for k in ("version", "classes", "split") if existing.get(k) != wanted.get(k)]
    diff += dotted_diff(existing.get("refine"), wanted.get("refine"), "refine")
    source = folder_mismatch(existing.get("source") or {}, wanted.get("source") or {})
    return diff + [f"source.{k}" for k in source]
