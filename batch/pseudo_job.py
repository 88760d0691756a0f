"""The pseudo-label job: what to compute, where it goes, and the per-image step every executor shares.

Outputs land in <out>/maps and <out>/labels (the foundation's per-image format, `weakseg.pseudo`), with
<out>/manifest.json pinning the configuration, <out>/failures.jsonl recording images that failed and
<out>/summary.json the last run's counts. An image counts as done when its label PNG exists; the label is
written after the maps and every write is complete-or-absent (`batch.store`), so a done image is whole.

`run_local` runs the job in this process (`weakseg pseudo --workers 0`, the demo); `batch.ray_job.run_ray`
runs the same per-image step (`process_image`) on a pool of Ray actors.
"""

from __future__ import annotations

import io
import json
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
from weakseg.models.checkpoint import file_sha256, read_metadata
from weakseg.models.classifier_io import load_classifier
from weakseg.pseudo import LabelConfig, PseudoResult, build_manifest, manifest_mismatch, pseudo_label

MANIFEST, FAILURES, SUMMARY = "manifest.json", "failures.jsonl", "summary.json"


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
    retries: int = 1
    limit: int | None = None  # first N ids of the split (benchmarks and demos)


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
        return {"id": self.id, "error": self.error, "attempts": self.attempts, "worker": self.worker,
                "traceback": self.traceback}


def done_ids(out: Path | str | LocalStore | ArrowStore) -> set[str]:
    """Ids whose outputs are complete, from one listing of labels/ (cheap on object stores too)."""
    return {n[:-4] for n in open_store(out).list_names("labels") if n.endswith(".png")}


def job_manifest(job: PseudoJob, classes: list[str]) -> dict[str, Any]:
    """The manifest this job pins its output folder to (method, configuration, model checksum; no execution settings)."""
    return build_manifest(job.method, job.multiscale, job.labels, file_sha256(job.model), classes,
                          job.split, str(Path(job.data).resolve()))


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
            raise WeaksegError(f"{store.uri}: holds pseudo labels made with a different configuration "
                               f"(differs in: {', '.join(diff)}); choose another --out or remove it")
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


def process_image(job: PseudoJob, dataset: VOCDataset, model: torch.nn.Module, device: torch.device,
                  image_id: str, store: LocalStore | ArrowStore | None = None) -> ImageOutcome:
    """Compute and write one image, retrying up to job.retries times; failures are returned, not raised."""
    store = store or open_store(job.out)
    t0 = time.perf_counter()
    attempt = 0
    while True:
        attempt += 1
        try:
            torch.manual_seed(image_seed(image_id))  # stochastic methods give the same maps on any worker
            image = dataset.image(image_id)
            result = pseudo_label(job.method, model, image, dataset.label_ids(image_id), job.multiscale, job.labels,
                                  device, image_key=image_id)
            write_result(store, image_id, result)
            return ImageOutcome(image_id, True, attempt, time.perf_counter() - t0)
        except Exception as e:  # recorded per image; the job goes on
            if attempt > job.retries:
                return ImageOutcome(image_id, False, attempt, time.perf_counter() - t0, error=f"{type(e).__name__}: {e}",
                                    traceback=traceback.format_exc(limit=4))


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


def finish(store: LocalStore | ArrowStore, summary: dict[str, Any], attempted: set[str],
           failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Write failures.jsonl and summary.json; return the summary."""
    write_failures(store, attempted, failures)
    store.write_bytes(SUMMARY, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


def run_local(job: PseudoJob, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Run the job in this process; returns the summary (also written to <out>/summary.json)."""
    store = open_store(job.out)
    dataset = VOCDataset(job.data, job.split, labels=job.label_source)
    check_model_classes(job, dataset.classes)
    prepare_output(job, dataset.classes)
    model, _ = load_classifier(job.model, device)
    ids = job_ids(job, dataset)
    done = done_ids(store)
    todo = [i for i in ids if i not in done]
    counts = {"total": len(ids), "skipped": len(ids) - len(todo), "succeeded": 0, "failed": 0}
    failures: list[dict[str, Any]] = []
    attempted: set[str] = set()
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
    finally:
        seconds = time.time() - t0
        summary = {**counts, "seconds": round(seconds, 2),
                   "images_per_second": round(counts["succeeded"] / seconds, 3) if seconds > 0 else None,
                   "out": store.uri, "executor": "local", "workers": 0, "threads_per_worker": torch.get_num_threads(),
                   "per_worker": {"local": {"images": counts["succeeded"], "busy_seconds": round(busy, 2),
                                            "images_per_second": round(counts["succeeded"] / busy, 3) if busy > 0 else None}}}
        finish(store, summary, attempted, failures)
    return summary
