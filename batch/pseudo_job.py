"""The pseudo-label job: what to compute, where it goes, and the per-image step every executor shares.

Outputs land in <out>/maps and <out>/labels (the foundation's per-image format, `weakseg.pseudo`), with
<out>/manifest.json pinning the configuration, <out>/failures.jsonl recording images that failed and
<out>/summary.json the last run's counts. An image counts as done when its label PNG exists; the label is
written after the maps and every write is complete-or-absent (`batch.store`), so a done image is whole.

Failing fast: before any image is dispatched, `check_inputs` checks the paths, loads the model once (a file that
does not load, or gives non-finite outputs, stops the job there) and lets the method check its own inputs (RIB's
companion folder); during the run, `max_consecutive_failures` failed images in a row stop the job with the first
of them. Paths are made absolute (`absolute_job`) and checked again on every worker (`check_job_paths`).

`run_local` runs the job in this process (`weakseg pseudo --workers 0`, the demo); `batch.ray_job.run_ray`
runs the same per-image step (`process_image`) on a pool of Ray actors.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from batch.store import ArrowStore, LocalStore, open_store
from weakseg.attribution.base import AttributionMethod, MultiScale
from weakseg.attribution.keys import stable_hash
from weakseg.data.classes import voc_palette
from weakseg.data.voc import VOCDataset
from weakseg.errors import WeaksegError
from weakseg.io import encode_png
from weakseg.models.checkpoint import file_sha256, read_metadata, resolve_weights
from weakseg.models.classifier_io import load_classifier
from weakseg.models.contract import CAMModel
from weakseg.pseudo import LabelConfig, PseudoResult, build_manifest, manifest_mismatch, method_locations, pseudo_label

MANIFEST, FAILURES, SUMMARY = "manifest.json", "failures.jsonl", "summary.json"
DEFAULT_RETRIES = 2  # extra attempts per image (the CLI's --retries default too)
DEFAULT_MAX_CONSECUTIVE_FAILURES = 10  # failed images in a row that stop a job (0: never stop)


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


@dataclass
class ImageOutcome:
    """What happened to one image (returned by workers to the driver)."""

    id: str
    ok: bool
    attempts: int
    seconds: float
    error: str = ""
    traceback: str = ""
    worker: int = -1

    def failure_record(self) -> dict[str, Any]:
        """The failures.jsonl line for a failed image."""
        return {
            "id": self.id,
            "error": self.error,
            "attempts": self.attempts,
            "worker": self.worker,
            "traceback": self.traceback,
        }


def done_ids(out: Path | str | LocalStore | ArrowStore) -> set[str]:
    """Ids whose outputs are complete, from one listing of labels/ (cheap on object stores too)."""
    return {n[:-4] for n in open_store(out).list_names("labels") if n.endswith(".png")}


def job_manifest(job: PseudoJob, classes: list[str]) -> dict[str, Any]:
    """The manifest this job pins its output folder to (method, configuration, model checksum; no execution settings)."""
    return build_manifest(
        job.method,
        job.multiscale,
        job.labels,
        file_sha256(job.model),
        classes,
        job.split,
        str(Path(job.data).resolve()),
        model=str(Path(job.model).resolve()),
    )


def prepare_output(job: PseudoJob, classes: list[str]) -> dict[str, Any]:
    """Create the output location and manifest, or check an existing manifest matches (else refuse)."""
    store = open_store(job.out)
    wanted = job_manifest(job, classes)
    raw = store.read_bytes(MANIFEST)
    if raw is not None:
        try:
            existing = json.loads(raw)
        except json.JSONDecodeError as e:
            raise WeaksegError(f"{store.uri}/{MANIFEST}: unreadable manifest ({e}); move the folder aside") from e
        diff = manifest_mismatch(existing, wanted)
        if diff:
            raise WeaksegError(
                f"{store.uri}: holds pseudo labels made with a different configuration "
                f"(differs in: {', '.join(diff)}); choose another --out or remove it"
            )
    else:
        store.makedirs()
        store.write_bytes(MANIFEST, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode())
    for folder in ("maps", "labels"):
        store.makedirs(folder)
        store.sweep_partials(folder)
    return wanted


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
    return dataclasses.replace(
        job,
        method=method,
        model=Path(job.model).expanduser().absolute(),
        data=Path(job.data).expanduser().absolute(),
        out=open_store(job.out),
    )


def check_job_paths(job: PseudoJob) -> None:
    """WeaksegError naming the flag, path and host when the model file, the dataset folder or a folder the method
    reads (RIB's companions) is not there; workers call it on their own node."""
    host = socket.gethostname()
    try:
        resolve_weights(job.model)
    except WeaksegError as e:
        raise WeaksegError(f"--model {job.model}: not usable on {host} ({e})") from e
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


@dataclass
class FailureStreak:
    """Failed images in a row (in completion order) and the first of them; a success ends the streak."""

    limit: int  # 0: never stop
    count: int = 0
    first: ImageOutcome | None = None

    def update(self, outcome: ImageOutcome) -> bool:
        """Count an outcome; True when the job must stop."""
        if outcome.ok:
            self.count, self.first = 0, None
            return False
        self.count += 1
        self.first = self.first or outcome
        return self.tripped

    @property
    def tripped(self) -> bool:
        """Whether the streak reached the limit."""
        return 0 < self.limit <= self.count

    def message(self) -> str:
        """Why the job stopped, with the first error of the streak."""
        first = self.first or ImageOutcome("?", False, 0, 0.0)
        return (
            f"stopped after {self.count} consecutive failed images (--max-consecutive-failures {self.limit}); "
            f"the first, {first.id}: {first.error}"
        )


def write_result(out: Path | str | LocalStore | ArrowStore, image_id: str, result: PseudoResult) -> None:
    """Write one image's maps then its label PNG (the label marks it done)."""
    store = open_store(out)
    buf = io.BytesIO()
    np.savez_compressed(buf, maps=result.maps, class_ids=result.class_ids)
    store.write_bytes(f"maps/{image_id}.npz", buf.getvalue())
    store.write_bytes(f"labels/{image_id}.png", encode_png(result.label, palette=voc_palette()))


def image_seed(image_id: str) -> int:
    """A seed that depends only on the image id (same on every worker, in every run)."""
    return stable_hash(image_id) & (2**63 - 1)  # torch.manual_seed takes a non-negative int64


def process_image(
    job: PseudoJob,
    dataset: VOCDataset,
    model: CAMModel,
    device: torch.device,
    image_id: str,
    store: LocalStore | ArrowStore | None = None,
) -> ImageOutcome:
    """Compute and write one image, retrying up to job.retries times; failures are returned, not raised."""
    store = store or open_store(job.out)
    t0 = time.perf_counter()
    attempt = 0
    while True:
        attempt += 1
        try:
            torch.manual_seed(image_seed(image_id))  # stochastic methods give the same maps on any worker
            image = dataset.image(image_id)
            result = pseudo_label(
                job.method,
                model,
                image,
                dataset.label_ids(image_id),
                job.multiscale,
                job.labels,
                device,
                image_key=image_id,
            )
            write_result(store, image_id, result)
            return ImageOutcome(image_id, True, attempt, time.perf_counter() - t0)
        except Exception as e:  # recorded per image; the job goes on
            if attempt > job.retries:
                return ImageOutcome(
                    image_id,
                    False,
                    attempt,
                    time.perf_counter() - t0,
                    error=f"{type(e).__name__}: {e}",
                    traceback=traceback.format_exc(limit=4),
                )


def write_failures(store: LocalStore | ArrowStore, attempted: set[str], failures: list[dict[str, Any]]) -> None:
    """Rewrite failures.jsonl: this run's failures plus earlier ones for images neither done nor retried now."""
    done = done_ids(store)
    kept = []
    raw = store.read_bytes(FAILURES)
    for line in (raw or b"").decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("id") not in attempted and record.get("id") not in done:
            kept.append(record)
    text = "".join(json.dumps(r) + "\n" for r in kept + failures)
    if raw is not None or text:
        store.write_bytes(FAILURES, text.encode())


def finish(
    store: LocalStore | ArrowStore, summary: dict[str, Any], attempted: set[str], failures: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write failures.jsonl and summary.json; return the summary."""
    write_failures(store, attempted, failures)
    store.write_bytes(SUMMARY, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


def run_local(job: PseudoJob, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Run the job in this process; returns the summary (also written to <out>/summary.json)."""
    if job.max_consecutive_failures < 0:
        raise WeaksegError(f"--max-consecutive-failures must be >= 0, got {job.max_consecutive_failures}")
    job = absolute_job(job)
    store = open_store(job.out)
    dataset = VOCDataset(job.data, job.split, labels=job.label_source)
    check_model_classes(job, dataset.classes)
    model, _ = load_classifier(job.model, device)
    check_inputs(job, dataset.classes, model)
    prepare_output(job, dataset.classes)
    ids = job_ids(job, dataset)
    done = done_ids(store)
    todo = [i for i in ids if i not in done]
    counts = {"total": len(ids), "skipped": len(ids) - len(todo), "succeeded": 0, "failed": 0}
    failures: list[dict[str, Any]] = []
    attempted: set[str] = set()
    streak = FailureStreak(job.max_consecutive_failures)
    stopped: str | None = None
    t0 = time.time()
    busy = 0.0
    try:
        for image_id in tqdm(todo, desc=f"{job.method.name} pseudo labels", unit="img", disable=not progress):
            attempted.add(image_id)
            outcome = process_image(job, dataset, model, device, image_id, store)
            busy += outcome.seconds
            if outcome.ok:
                counts["succeeded"] += 1
            else:
                counts["failed"] += 1
                failures.append(outcome.failure_record())
            if streak.update(outcome):
                stopped = streak.message()
                break
    finally:
        seconds = time.time() - t0
        summary = {
            **counts,
            "not_run": len(todo) - counts["succeeded"] - counts["failed"],
            "stopped": stopped,
            "method_locations": method_locations(job.method),
            "seconds": round(seconds, 2),
            "images_per_second": round(counts["succeeded"] / seconds, 3) if seconds > 0 else None,
            "out": store.uri,
            "executor": "local",
            "workers": 0,
            "threads_per_worker": torch.get_num_threads(),
            "per_worker": {
                "local": {
                    "images": counts["succeeded"],
                    "busy_seconds": round(busy, 2),
                    "images_per_second": round(counts["succeeded"] / busy, 3) if busy > 0 else None,
                }
            },
        }
        finish(store, summary, attempted, failures)
    if stopped:
        raise WeaksegError(f"{stopped} (see {store.uri}/{FAILURES})")
    return summary
