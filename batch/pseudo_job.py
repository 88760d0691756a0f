"""The pseudo-label job: what to compute, where it goes, and its per-image step (`PseudoStep`).

Outputs land in <out>/maps and <out>/labels (the foundation's per-image format, `weakseg.pseudo`), with
<out>/manifest.json pinning the configuration, <out>/failures.jsonl recording images that failed and
<out>/summary.json the last run's counts. An image counts as done when its label PNG exists; the label is
written after the maps and every write is complete-or-absent (`batch.store`), so a done image is whole. With a
refiner (`PseudoJob.refine`, `weakseg pseudo --refine`) the label PNGs are the refiner's labels of the method's
maps (the maps stay the method's) and the refiner's configuration is pinned in the manifest.

Failing fast: before any image is dispatched, `PseudoJob.prepare` checks the paths, loads the model once (a file
that does not load, or gives non-finite outputs, stops the job there), lets the method check its own inputs
(RIB's companion folder) and builds the refiner (an IRN checkpoint that is missing, not an IRN or trained on other
classes stops it too); during the run, `max_consecutive_failures` failed images in a row stop the job with the
first of them. Paths are made absolute (`absolute_job`) and checked again on every worker (`check_job_paths`).

The executors are `batch.image_job.run_local` (in this process: `weakseg pseudo --workers 0`, the demo) and
`batch.ray_job.run_ray` (a pool of Ray actors); both run `PseudoStep` through `batch.image_job.process_image`.
"""

from __future__ import annotations

import dataclasses
import io
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from batch.cluster import DIR_FINGERPRINT, Probe, file_fingerprint, fingerprint
from batch.image_job import (  # noqa: F401  (re-exported: the executor's names were this module's)
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_RETRIES,
    FAILURES,
    MANIFEST,
    SUMMARY,
    FailureStreak,
    ImageOutcome,
    done_ids,
    finish,
    image_seed,
    prepare_folder,
    process_image,
    run_local,
    write_failures,
    write_outputs,
)
from batch.refine_job import check_irn_path, irn_probe, open_refiner
from batch.store import ArrowStore, LocalStore, OutputStore, open_store
from weakseg.attribution.base import AttributionMethod, MultiScale
from weakseg.data.voc import VOCDataset
from weakseg.errors import WeaksegError
from weakseg.models.checkpoint import file_sha256, read_metadata, resolve_weights
from weakseg.models.classifier_io import load_classifier
from weakseg.models.resnet_cam import CAMClassifier
from weakseg.pseudo import LabelConfig, PseudoResult, build_manifest, manifest_mismatch, method_locations, pseudo_label
from weakseg.refine.refiner import Refiner
from weakseg.refine.stage import RefineSpec, refine_label


@dataclass
class PseudoJob:
    """A pseudo-label job: method, model, data and where results go (a path, s3://... URI or a store)."""

    method: AttributionMethod
    model: Path
    data: Path
    split: str
    out: Path | str | LocalStore | ArrowStore
    multiscale: MultiScale = field(default_factory=MultiScale)
    labels: LabelConfig = field(default_factory=LabelConfig)
    label_source: str = "auto"
    retries: int = DEFAULT_RETRIES
    limit: int | None = None  # first N ids of the split (benchmarks and demos)
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES  # 0: never stop
    refine: RefineSpec | None = None  # a refiner run on the method's maps: its labels become the PNGs

    def title(self) -> str:
        """The progress bar's text."""
        return f"{self.method.name} pseudo labels" + (f" + {self.refine.name}" if self.refine else "")

    def absolute(self) -> PseudoJob:
        """`absolute_job`."""
        return absolute_job(self)

    def check_paths(self) -> None:
        """`check_job_paths`."""
        check_job_paths(self)

    def prepare(self, device: torch.device) -> tuple[list[str], PseudoStep]:
        """Check the model's classes, load it on `device` with the refiner (the step), check the inputs with it,
        then create or check the output folder; the ids and the step."""
        dataset = VOCDataset(self.data, self.split, labels=self.label_source)
        check_model_classes(self, dataset.classes)
        step = PseudoStep.open(self, device, dataset)
        check_inputs(self, dataset.classes, step.model)
        prepare_output(self, dataset.classes, step.refiner)
        return job_ids(self, dataset), step

    def open_step(self, device: torch.device) -> PseudoStep:
        """The per-image step with the model (and refiner) loaded on `device`."""
        return PseudoStep.open(self, device)

    def probes(self) -> list[Probe]:
        """`location_probes` over the job's dataset."""
        return location_probes(self, VOCDataset(self.data, self.split, labels=self.label_source))

    def summary_fields(self) -> dict[str, Any]:
        """The method's (and refiner's) locations where this run found them."""
        return {
            "method_locations": method_locations(self.method),
            **({"refine_locations": self.refine.locations()} if self.refine else {}),
        }


def job_manifest(job: PseudoJob, classes: list[str], refiner: Refiner | None = None) -> dict[str, Any]:
    """The manifest this job pins its output folder to (method, configuration, model checksum, the refiner's
    configuration when the job refines, built once as `refiner`; no execution settings)."""
    if job.refine is not None and refiner is None:
        refiner = open_refiner(job.refine, torch.device("cpu"), classes)
    return build_manifest(
        job.method,
        job.multiscale,
        job.labels,
        file_sha256(job.model),
        classes,
        job.split,
        str(Path(job.data).resolve()),
        model=str(Path(job.model).resolve()),
        refine=refiner.config() if refiner is not None else None,
        refine_locations=job.refine.locations() if job.refine else None,
    )


def prepare_output(job: PseudoJob, classes: list[str], refiner: Refiner | None = None) -> dict[str, Any]:
    """Create the output location and manifest, or check an existing manifest matches (else refuse)."""
    return prepare_folder(job.out, job_manifest(job, classes, refiner), manifest_mismatch, "pseudo labels")


def check_model_classes(job: PseudoJob, classes: list[str]) -> None:
    """Refuse a model trained on other classes than the dataset's (reads metadata only)."""
    model_classes = read_metadata(job.model)["config"].get("classes") or []
    if model_classes and list(model_classes) != list(classes):
        raise WeaksegError(f"{job.model}: trained on classes {model_classes[:4]}..., dataset has {classes[:4]}...")


def job_ids(job: PseudoJob, dataset: VOCDataset) -> list[str]:
    """The ids the job covers (the split, or its first `limit` ids)."""
    return dataset.ids[: job.limit] if job.limit else list(dataset.ids)


def method_flag(method: AttributionMethod, name: str) -> str:
    """The command-line flag of a method field (e.g. --rib-data, --rib-advcam-rib-data)."""
    return f"--{method.name}-{name.replace('_', '-')}"


def absolute_job(job: PseudoJob) -> PseudoJob:
    """The job with absolute paths (model, data, the method's location fields) and a resolved store: what is
    shipped to workers, which may run in another folder or on another node."""
    locations = {k: str(Path(v).expanduser().absolute()) for k, v in method_locations(job.method).items() if v}
    method = dataclasses.replace(job.method, **locations) if locations else job.method  # type: ignore[type-var]  # every method is a dataclass; the ABC is not
    refine = job.refine
    if refine is not None and refine.irn_model:
        refine = dataclasses.replace(refine, irn_model=str(Path(refine.irn_model).expanduser().absolute()))
    return dataclasses.replace(
        job,
        method=method,
        model=Path(job.model).expanduser().absolute(),
        data=Path(job.data).expanduser().absolute(),
        out=open_store(job.out),
        refine=refine,
    )


def check_job_paths(job: PseudoJob) -> None:
    """WeaksegError naming the flag, path and host when the model file, the dataset folder or a folder the method
    reads (RIB's companions) is not there; workers call it on their own node."""
    host = socket.gethostname()
    try:
        resolve_weights(job.model)
    except WeaksegError as e:
        raise WeaksegError(f"--model {job.model}: not usable on {host} ({e})") from e
    if job.refine is not None and job.refine.irn_model:
        check_irn_path(job.refine.irn_model)
    folders = [("--data", str(job.data))]
    folders += [(method_flag(job.method, k), v) for k, v in method_locations(job.method).items() if v]
    for flag, folder in folders:
        if not Path(folder).is_dir():
            raise WeaksegError(f"{flag} {folder}: no such folder on {host}")


def check_inputs(job: PseudoJob, classes: list[str], model: torch.nn.Module | None = None) -> None:
    """Once, before any image is dispatched: the paths, the model (loaded on the CPU unless given, checked against
    the method's model contract, finite on a small input) and the method's own inputs (RIB's companion split)."""
    check_job_paths(job)
    if model is None:
        model, _ = load_classifier(job.model, "cpu")
    try:
        cam_model = job.method.check_model(model)
    except TypeError as e:
        raise WeaksegError(f"{job.model}: {e}") from e
    device = next(model.parameters()).device
    with torch.no_grad():
        logits, cams = cam_model.logits_and_cams(torch.zeros((1, 3, 32, 32), device=device))
    if not (torch.isfinite(logits).all() and torch.isfinite(cams).all()):
        raise WeaksegError(f"{job.model}: the classifier gives non-finite outputs (broken weights?)")
    job.method.check_inputs(len(classes))


def encode_maps(result: PseudoResult) -> bytes:
    """The maps/<id>.npz file of one image's result."""
    buf = io.BytesIO()
    np.savez_compressed(buf, maps=result.maps, class_ids=result.class_ids)
    return buf.getvalue()


def write_result(out: Path | str | LocalStore | ArrowStore, image_id: str, result: PseudoResult) -> None:
    """Write one image's maps then its label PNG (the label marks it done)."""
    write_outputs(open_store(out), image_id, encode_maps(result), result.label)


@dataclass
class PseudoStep:
    """The pseudo-label job's per-image step in one process: the dataset reader, the model and the refiner."""

    job: PseudoJob
    dataset: VOCDataset
    model: CAMClassifier
    device: torch.device
    refiner: Refiner | None = None

    @classmethod
    def open(cls, job: PseudoJob, device: torch.device, dataset: VOCDataset | None = None) -> PseudoStep:
        """Open the dataset (unless given) and load the model and the refiner on `device`."""
        dataset = dataset or VOCDataset(job.data, job.split, labels=job.label_source)
        model, _ = load_classifier(job.model, device)
        refiner = open_refiner(job.refine, device, dataset.classes) if job.refine else None
        return cls(job, dataset, model, device, refiner)

    def __call__(self, image_id: str, store: OutputStore) -> None:
        """Maps and label of one image (the refiner's label of the stored maps when the job refines), written."""
        job, image = self.job, self.dataset.image(image_id)
        result = pseudo_label(
            job.method,
            self.model,
            image,
            self.dataset.label_ids(image_id),
            job.multiscale,
            job.labels,
            self.device,
            image_key=image_id,
        )
        if self.refiner is not None:
            label = refine_label(self.refiner, image, result.maps, result.class_ids)
            result = dataclasses.replace(result, label=label)
        write_result(store, image_id, result)


def location_probes(job: PseudoJob, dataset: VOCDataset) -> list[Probe]:
    """What every node must see as the driver does: split list, weights file, the manifest just written."""
    store = open_store(job.out)
    manifest = store.read_bytes(MANIFEST) or b""
    probes = [
        Probe("--data", path=str(dataset.split_path.absolute()), fingerprint=file_fingerprint(dataset.split_path)),
        Probe(
            "--model", path=str(resolve_weights(job.model)), fingerprint=file_fingerprint(resolve_weights(job.model))
        ),
        Probe("--out", store=store, key=MANIFEST, fingerprint=fingerprint(manifest, len(manifest))),
    ]
    if dataset.labels_path is not None:
        probes.append(
            Probe(
                "--labels", path=str(dataset.labels_path.absolute()), fingerprint=file_fingerprint(dataset.labels_path)
            )
        )
    probes += [
        Probe(method_flag(job.method, k), path=v, fingerprint=DIR_FINGERPRINT)
        for k, v in method_locations(job.method).items()
        if v
    ]
    if job.refine is not None and job.refine.irn_model:
        probes.append(irn_probe(job.refine.irn_model))
    return probes
