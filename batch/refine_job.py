"""The refine job: a refiner (PAR, or IRN's random walk) over an existing pseudo-label folder, into a new one.

It reads the source folder's manifest (the dataset, split and classes; a folder without one is refused) and
covers the images the source has finished (its labels/ listing), in the split's order. Per image (`RefineStep`)
it reads the source's maps/<id>.npz, refines them on the image and writes the same format: maps/<id>.npz copied
byte for byte (the method's maps stay the seeds, so `weakseg eval seeds` scores the same seeds as on the source),
then labels/<id>.png, the refiner's label. <out>/manifest.json embeds the source's manifest and its sha256 and
pins the refiner's configuration (an IRN by its checkpoint's sha256; `weakseg.refine.stage.refine_manifest`).

Everything else is the pseudo-label job's machinery (`batch.image_job`): a re-run skips finished images, a changed
configuration is refused naming the differing keys, failures go to failures.jsonl, `max_consecutive_failures`
failed images in a row stop the job, writes are complete-or-absent; `run_local` runs it in this process and
`batch.ray_job.run_ray` on Ray actors (each loads the refiner once). Every input is checked before anything is
written: the source's manifest, the dataset (its classes, and an image for every source image), the IRN (there,
an IRN, trained on the source's classes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from batch.cluster import Probe, file_fingerprint, fingerprint
from batch.image_job import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_RETRIES,
    MANIFEST,
    Output,
    done_ids,
    prepare_folder,
    read_manifest,
    write_outputs,
)
from batch.store import LocalStore, OutputStore, open_store
from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError, WeaksegError
from weakseg.models.checkpoint import resolve_weights
from weakseg.refine.refiner import Refiner
from weakseg.refine.stage import (
    RefineSpec,
    build_refiner,
    decode_maps,
    folder_mismatch,
    refine_label,
    refine_manifest,
)


def open_refiner(spec: RefineSpec, device: torch.device, classes: list[str] | None) -> Refiner:
    """The spec's refiner on `device` (an IRN checked against `classes`); the checkpoint's errors name --irn."""
    spec.validate()
    try:
        return build_refiner(spec, device, classes)
    except WeaksegError as e:
        raise WeaksegError(f"--irn {e}") from e


def check_irn_path(path: str) -> None:
    """WeaksegError naming --irn, the path and this host when the IRN checkpoint is not there."""
    try:
        resolve_weights(path)
    except WeaksegError as e:
        raise WeaksegError(f"--irn {path}: not usable on {socket.gethostname()} ({e})") from e


def irn_probe(path: str) -> Probe:
    """The cluster probe of an IRN checkpoint (every node must see the driver's file)."""
    weights = resolve_weights(path)
    return Probe("--irn", path=str(weights), fingerprint=file_fingerprint(weights))


@dataclass
class RefineJob:
    """A refiner over the pseudo-label folder `maps`, into `out` (a path, s3://... URI or a store)."""

    maps: Output  # the source pseudo-label folder (`weakseg pseudo --out` or `weakseg refine --out`)
    out: Output
    refine: RefineSpec
    data: Path | None = None  # None: the source manifest's dataset
    retries: int = DEFAULT_RETRIES
    limit: int | None = None  # the first N images of the source
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES  # 0: never stop

    def title(self) -> str:
        """The progress bar's text."""
        return f"{self.refine.name} refine"

    def source_manifest(self) -> dict[str, Any]:
        """The source folder's manifest; DataError when it has none or one without a split and classes."""
        store = open_store(self.maps)
        manifest = read_manifest(store)
        if manifest is None:
            raise DataError(
                f"--maps {store.uri}: no {MANIFEST} (pass a folder `weakseg pseudo` or `weakseg refine` wrote)"
            )
        if not manifest.get("split") or not manifest.get("classes"):
            raise DataError(f"--maps {store.uri}/{MANIFEST}: names no split or classes (not a pseudo-label manifest)")
        return manifest

    def absolute(self) -> RefineJob:
        """The job with absolute paths, the dataset filled in from the source's manifest and resolved stores."""
        data = self.data if self.data is not None else self.source_manifest().get("data")
        if not data:
            raise DataError(f"--maps {open_store(self.maps).uri}/{MANIFEST}: records no dataset; pass --data")
        refine = self.refine
        if refine.irn_model:
            refine = dataclasses.replace(refine, irn_model=str(Path(refine.irn_model).expanduser().absolute()))
        return dataclasses.replace(
            self,
            maps=open_store(self.maps),
            out=open_store(self.out),
            data=Path(data).expanduser().absolute(),
            refine=refine,
        )

    def check_paths(self) -> None:
        """WeaksegError naming the flag, path and host when the dataset, the source folder or the IRN is not here."""
        host = socket.gethostname()
        if self.data is None or not Path(self.data).is_dir():
            raise WeaksegError(f"--data {self.data}: no such folder on {host}")
        source = open_store(self.maps)
        if isinstance(source, LocalStore) and not source.root.is_dir():
            raise WeaksegError(f"--maps {source.uri}: no such folder on {host}")
        if self.refine.irn_model:
            check_irn_path(self.refine.irn_model)

    def dataset(self, split: str) -> VOCDataset:
        """The job's dataset on the source's split."""
        return VOCDataset(self.data or "", split)

    def prepare(self, device: torch.device) -> tuple[list[str], RefineStep]:
        """Check the source, the dataset and the refiner (built on `device`, the step's), then create or check the
        output folder; the ids (the source's finished images in split order, the first `limit`) and the step."""
        self.check_paths()
        source_store = open_store(self.maps)
        if open_store(self.out).uri == source_store.uri:
            raise WeaksegError(f"--out {source_store.uri}: is the --maps folder; write the refined labels elsewhere")
        source = self.source_manifest()
        dataset = self.dataset(source["split"])
        if list(dataset.classes) != list(source["classes"]):
            raise DataError(
                f"--data {self.data}: has classes {dataset.classes[:4]}..., the maps are of {source['classes'][:4]}..."
            )
        have = done_ids(source_store)
        if not have:
            raise DataError(f"--maps {source_store.uri}: no finished images (no labels/<id>.png)")
        order = {i: n for n, i in enumerate(dataset.ids)}
        outside = sorted(have - set(order))
        absent = [i for i in sorted(have & set(order)) if not dataset.image_path(i).is_file()]
        if outside or absent:
            first = (outside + absent)[0]
            raise DataError(
                f"--data {self.data}: {len(outside) + len(absent)} of the {len(have)} images of --maps "
                f"{source_store.uri} are missing from split {source['split']!r} or its JPEGImages (e.g. {first})"
            )
        ids = sorted(have, key=order.__getitem__)[: self.limit] if self.limit else sorted(have, key=order.__getitem__)
        step = RefineStep(source_store, dataset, open_refiner(self.refine, device, list(source["classes"])))
        raw = source_store.read_bytes(MANIFEST) or b""
        wanted = refine_manifest(
            source,
            hashlib.sha256(raw).hexdigest(),
            source_store.uri,
            step.refiner.config(),
            self.refine.locations(),
            str(self.data),
        )
        prepare_folder(self.out, wanted, folder_mismatch, "refined labels")
        return ids, step

    def open_step(self, device: torch.device) -> RefineStep:
        """The per-image step with the refiner loaded on `device` (once per worker)."""
        split = self.source_manifest()["split"]
        return RefineStep(open_store(self.maps), self.dataset(split), open_refiner(self.refine, device, None))

    def probes(self) -> list[Probe]:
        """Every node must see the driver's split list, source manifest, IRN and the output manifest just written."""
        dataset = self.dataset(self.source_manifest()["split"])
        probes = [
            Probe("--data", path=str(dataset.split_path.absolute()), fingerprint=file_fingerprint(dataset.split_path))
        ]
        for flag, location in (("--maps", self.maps), ("--out", self.out)):
            store = open_store(location)
            raw = store.read_bytes(MANIFEST) or b""
            probes.append(Probe(flag, store=store, key=MANIFEST, fingerprint=fingerprint(raw, len(raw))))
        if self.refine.irn_model:
            probes.append(irn_probe(self.refine.irn_model))
        return probes

    def summary_fields(self) -> dict[str, Any]:
        """The source folder, the dataset and the refiner's locations of this run."""
        return {
            "maps": open_store(self.maps).uri,
            "data": str(self.data),
            "refine": self.refine.name,
            "refine_locations": self.refine.locations(),
        }


@dataclass
class RefineStep:
    """The refine job's per-image step in one process: the source folder, the dataset and the refiner."""

    source: OutputStore
    dataset: VOCDataset
    refiner: Refiner

    def __call__(self, image_id: str, store: OutputStore) -> None:
        """Refine one image's source maps; write the maps file (copied) and the refined label."""
        name = f"maps/{image_id}.npz"
        raw = self.source.read_bytes(name)
        if raw is None:
            raise DataError(f"{self.source.uri}/{name}: not found")
        maps, class_ids = decode_maps(raw, f"{self.source.uri}/{name}")
        label = refine_label(self.refiner, self.dataset.image(image_id), maps, class_ids)
        write_outputs(store, image_id, raw, label)
