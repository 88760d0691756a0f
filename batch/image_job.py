"""What every per-image batch job shares: the job interface, the retried per-image step, failure streaks, the
output folder's manifest check, failures.jsonl / summary.json and the in-process executor.

A job (`ImageJob`: the pseudo-label job of `batch.pseudo_job`, the refine job of `batch.refine_job`) writes
<out>/maps/<id>.npz then <out>/labels/<id>.png per image (complete-or-absent writes, `batch.store`), so an image
counts as done when its label exists and a re-run skips it. <out>/manifest.json pins the job's configuration (a
different one is refused, naming the differing keys), <out>/failures.jsonl records the images that failed and
<out>/summary.json the last run's counts. The driver calls `job.prepare(device)` once (it checks every input and
writes or checks the manifest before any image) and each worker `job.open_step(device)` (the model loaded once);
`process_image` runs the step on one image with retries. `run_local` runs a job in this process and
`batch.ray_job.run_ray` on a pool of Ray actors, over the same step.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from batch.cluster import Probe
from batch.store import ArrowStore, LocalStore, OutputStore, open_store
from weakseg.attribution.keys import stable_hash
from weakseg.data.classes import voc_palette
from weakseg.errors import WeaksegError
from weakseg.io import encode_png

MANIFEST, FAILURES, SUMMARY = "manifest.json", "failures.jsonl", "summary.json"
DEFAULT_RETRIES = 2  # extra attempts per image (the CLI's --retries default too)
DEFAULT_MAX_CONSECUTIVE_FAILURES = 10  # failed images in a row that stop a job (0: never stop)
Output = Path | str | LocalStore | ArrowStore  # a path, an s3://... URI or a store


class ImageStep(Protocol):
    """One process's per-image work, with its model loaded once: compute one image and write its outputs."""

    def __call__(self, image_id: str, store: OutputStore) -> None:
        """Compute image `image_id` and write maps/<id>.npz, then labels/<id>.png (which marks it done)."""
        ...


class ImageJob(Protocol):
    """What the executors ask of a per-image job (module docstring)."""

    out: Output
    retries: int  # extra attempts per image
    max_consecutive_failures: int  # failed images in a row that stop the job (0: never)

    def title(self) -> str:
        """The progress bar's text ("cam pseudo labels")."""
        ...

    def absolute(self) -> ImageJob:
        """The job with absolute paths and a resolved store: what is shipped to workers."""
        ...

    def check_paths(self) -> None:
        """WeaksegError naming the flag, path and host when an input is not there (workers call it on their node)."""
        ...

    def prepare(self, device: torch.device) -> tuple[list[str], ImageStep]:
        """Once, before any image: check the inputs (loading the model on `device`), create the output folder or
        check its manifest; the ids the job covers and the step built on `device`."""
        ...

    def open_step(self, device: torch.device) -> ImageStep:
        """The per-image step with its model loaded on `device` (once per worker)."""
        ...

    def probes(self) -> list[Probe]:
        """What every node of a cluster must see as the driver does."""
        ...

    def summary_fields(self) -> dict[str, Any]:
        """Entries this job adds to summary.json (where its inputs were)."""
        ...


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


def done_ids(out: Output) -> set[str]:
    """Ids whose outputs are complete, from one listing of labels/ (cheap on object stores too)."""
    return {n[:-4] for n in open_store(out).list_names("labels") if n.endswith(".png")}


def read_manifest(store: LocalStore | ArrowStore) -> dict[str, Any] | None:
    """The folder's manifest.json, None when it has none; WeaksegError when it does not parse."""
    raw = store.read_bytes(MANIFEST)
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as e:
        raise WeaksegError(f"{store.uri}/{MANIFEST}: unreadable manifest ({e}); move the folder aside") from e
    if not isinstance(manifest, dict):
        raise WeaksegError(f"{store.uri}/{MANIFEST}: not a label-folder manifest; move the folder aside")
    return manifest


def prepare_folder(
    out: Output, wanted: dict[str, Any], mismatch: Callable[[dict[str, Any], dict[str, Any]], list[str]], what: str
) -> dict[str, Any]:
    """Create the output folder with manifest `wanted`, or check an existing one's with `mismatch(existing,
    wanted) -> differing keys` (refused, naming them); sweep abandoned partial files. `what`: "pseudo labels"."""
    store = open_store(out)
    existing = read_manifest(store)
    if existing is not None:
        diff = mismatch(existing, wanted)
        if diff:
            raise WeaksegError(
                f"{store.uri}: holds {what} made with a different configuration "
                f"(differs in: {', '.join(diff)}); choose another --out or remove it"
            )
    else:
        store.makedirs()
        store.write_bytes(MANIFEST, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode())
    for folder in ("maps", "labels"):
        store.makedirs(folder)
        store.sweep_partials(folder)
    return wanted


def write_outputs(store: OutputStore, image_id: str, maps_npz: bytes, label: np.ndarray) -> None:
    """Write one image's maps file then its label PNG (the label marks it done)."""
    store.write_bytes(f"maps/{image_id}.npz", maps_npz)
    store.write_bytes(f"labels/{image_id}.png", encode_png(label, palette=voc_palette()))


def image_seed(image_id: str) -> int:
    """A seed that depends only on the image id (same on every worker, in every run)."""
    return stable_hash(image_id) & (2**63 - 1)  # torch.manual_seed takes a non-negative int64


def process_image(job: ImageJob, step: ImageStep, image_id: str, store: OutputStore | None = None) -> ImageOutcome:
    """Run the step on one image, retrying up to job.retries times; failures are returned, not raised."""
    store = store or open_store(job.out)
    t0 = time.perf_counter()
    attempt = 0
    while True:
        attempt += 1
        try:
            torch.manual_seed(image_seed(image_id))  # stochastic methods give the same maps on any worker
            step(image_id, store)
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


def write_failures(store: OutputStore, attempted: set[str], failures: list[dict[str, Any]]) -> None:
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
    store: OutputStore, summary: dict[str, Any], attempted: set[str], failures: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write failures.jsonl and summary.json; return the summary."""
    write_failures(store, attempted, failures)
    store.write_bytes(SUMMARY, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


def check_failure_limit(job: ImageJob) -> None:
    """Refuse a negative --max-consecutive-failures."""
    if job.max_consecutive_failures < 0:
        raise WeaksegError(f"--max-consecutive-failures must be >= 0, got {job.max_consecutive_failures}")


def run_local(job: ImageJob, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Run the job in this process; returns the summary (also written to <out>/summary.json)."""
    check_failure_limit(job)
    job = job.absolute()
    store = open_store(job.out)
    ids, step = job.prepare(device)
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
        for image_id in tqdm(todo, desc=job.title(), unit="img", disable=not progress):
            attempted.add(image_id)
            outcome = process_image(job, step, image_id, store)
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
            **job.summary_fields(),
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
