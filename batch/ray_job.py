"""A per-image batch job on Ray (`batch.image_job.ImageJob`: the pseudo-label job, the refine job): a pool of
actors (each holding the job's model) fed image ids by the driver.

Ray does the placement, replaces a worker process that dies (max_restarts) and re-runs the calls it was
holding (max_task_retries = job.retries); the driver only keeps each worker's queue `inflight_per_worker`
deep, shows progress and writes failures.jsonl and summary.json. Outputs are written by the workers, so
--out must be reachable from every node (checked up front on a cluster). The job's inputs and model are
checked in the driver before Ray is even attached (`job.prepare`, on the CPU), each worker checks the
(absolute) paths on its node as it starts, and `job.max_consecutive_failures` failed images in a row stop the
dispatch with the first of their errors.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict, deque
from typing import Any

import torch
from tqdm import tqdm

from batch.cluster import (
    RayOptions,
    RaySession,
    check_shared_locations,
    cluster_address,
    connect,
    disconnect,
)
from batch.faults import fault_env
from batch.image_job import (
    FAILURES,
    FailureStreak,
    ImageJob,
    ImageOutcome,
    check_failure_limit,
    done_ids,
    finish,
)
from batch.store import open_store
from batch.worker import ImageWorker, worker_device
from weakseg.errors import WeaksegError


def plan_workers(
    options: RayOptions, device: str, cpus: float, gpus: float, todo: int, strict: bool
) -> tuple[int, float]:
    """(workers, GPUs per worker) from the options and the CPUs/GPUs available; strict: refuse what cannot run here."""
    requested = options.gpus_per_worker
    if device not in ("cpu", "cuda", "auto"):
        raise WeaksegError(f"--device {device!r}: use cpu, cuda or auto")
    if device == "cpu" and requested:
        raise WeaksegError("--gpus-per-worker > 0 contradicts --device cpu")
    if device == "cuda" and requested == 0:
        raise WeaksegError("--device cuda needs --gpus-per-worker > 0 (Ray hands GPUs to workers)")
    use_gpu = device == "cuda" or (device == "auto" and (bool(requested) or (requested is None and gpus > 0)))
    if use_gpu and gpus == 0 and strict:
        raise WeaksegError("GPU workers requested but this machine has no CUDA GPU (use --device cpu)")
    workers = options.workers
    if workers is None:
        workers = int(gpus // (requested or 1)) if use_gpu else int(cpus // options.threads_per_worker)
    workers = max(1, min(workers, max(todo, 1)))
    if not use_gpu:
        return workers, 0.0
    if requested:
        return workers, requested
    return workers, min(1.0, gpus / workers) if gpus else 1.0  # several workers share a GPU when there are fewer GPUs


def _start_workers(job: ImageJob, options: RayOptions, workers: int, gpus: float, device: str) -> list:
    import ray

    env = fault_env()
    cls = ray.remote(ImageWorker).options(
        num_cpus=options.threads_per_worker,
        num_gpus=gpus,
        max_restarts=options.max_worker_restarts,
        max_task_retries=job.retries,
        runtime_env={"env_vars": env} if env else None,
    )
    return [cls.remote(job, rank, worker_device(device, gpus), options.threads_per_worker) for rank in range(workers)]


def _wait_ready(actors: list, options: RayOptions, gpus: float) -> list[dict[str, Any]]:
    """Block until every worker has loaded its model; a worker that cannot start fails the job with its cause."""
    import ray

    refs = [a.ready.remote() for a in actors]
    t0 = time.time()
    while True:
        done, waiting = ray.wait(refs, num_returns=len(refs), timeout=60)
        if not waiting:
            break
        print(
            f"weakseg: waiting for {len(waiting)}/{len(refs)} workers ({options.threads_per_worker} CPU, {gpus:g} GPU "
            f"each; {time.time() - t0:.0f}s; cluster has {ray.cluster_resources()})",
            file=sys.stderr,
        )
    try:
        return ray.get(refs)
    except ray.exceptions.RayError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        cause = next((ln for ln in reversed(lines) if "Error" in ln.split(":")[0]), lines[-1] if lines else str(e))
        raise WeaksegError(f"a pseudo-label worker could not start: {cause}") from e


def _dispatch(actors: list, todo: list[str], job: ImageJob, options: RayOptions, bar: tqdm, record: Any) -> list[str]:
    """Keep every worker's queue filled until all ids are processed; returns ids left unrun (all workers gone).

    `record(outcome)` returning True stops the dispatch at once (the images still queued are abandoned).
    """
    import ray

    pending = deque(todo)
    inflight: dict[Any, tuple[str, int]] = {}
    load: defaultdict[int, int] = defaultdict(int)
    alive = set(range(len(actors)))
    requeued: set[str] = set()

    def fill(k: int) -> None:
        while pending and k in alive and load[k] < options.inflight_per_worker:
            image_id = pending.popleft()
            inflight[actors[k].process.remote(image_id)] = (image_id, k)
            load[k] += 1

    for k in sorted(alive):
        fill(k)
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        for ref in ready:
            image_id, k = inflight.pop(ref)
            load[k] -= 1
            try:
                outcome = ray.get(ref)
            except ray.exceptions.ActorDiedError as e:  # the worker is gone for good (restarts used up)
                alive.discard(k)
                if image_id not in requeued:  # not necessarily this image's fault: one more go elsewhere
                    requeued.add(image_id)
                    pending.appendleft(image_id)
                    continue
                outcome = ImageOutcome(
                    image_id,
                    False,
                    job.retries + 1,
                    0.0,
                    worker=k,
                    error=f"WorkerDied: {(str(e).splitlines() or [''])[0]}",
                )
            except ray.exceptions.RayError as e:  # its worker died on it more than job.retries times, or a system error
                outcome = ImageOutcome(
                    image_id,
                    False,
                    job.retries + 1,
                    0.0,
                    worker=k,
                    error=f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}",
                )
            stop = record(outcome)
            bar.update(1)
            if stop:
                return []
            fill(k)
        if pending and not alive:
            break
        for k in sorted(alive):
            fill(k)
    return list(pending)


def _attach(options: RayOptions, device: str, n_todo: int) -> tuple[RaySession, int, float]:
    """Connect to Ray and size the pool: local resources decide before a local start, the cluster's after joining."""
    import ray
    import torch

    if not ray.is_initialized() and cluster_address(options) is None:
        gpus_here = torch.cuda.device_count() if device != "cpu" else 0
        workers, gpus = plan_workers(options, device, os.cpu_count() or 1, gpus_here, n_todo, strict=True)
        return connect(options, local_cpus=workers * options.threads_per_worker), workers, gpus
    session = connect(options, local_cpus=0)
    res = ray.cluster_resources()
    workers, gpus = plan_workers(
        options, device, res.get("CPU", 0), res.get("GPU", 0), n_todo, strict=not session.remote
    )
    return session, workers, gpus


def _restarted_ranks(actors: list) -> list[int]:
    """Ranks of the workers Ray had to replace during the run (their constructor ran again)."""
    import ray

    ranks = []
    for a in actors:
        try:
            info = ray.get(a.ready.remote(), timeout=60)
        except (ray.exceptions.RayError, TimeoutError):
            continue
        if info["restarted"]:
            ranks.append(info["rank"])
    return ranks


def run_ray(
    job: ImageJob, options: RayOptions = RayOptions(), device: str = "auto", progress: bool = True
) -> dict[str, Any]:
    """Run the job on Ray (local in-process or a cluster); returns the summary (also <out>/summary.json)."""
    if options.threads_per_worker < 1:
        raise WeaksegError(f"--threads-per-worker must be >= 1, got {options.threads_per_worker}")
    if options.workers is not None and options.workers < 1:
        raise WeaksegError(f"--workers must be >= 1 on Ray (0 runs in-process), got {options.workers}")
    check_failure_limit(job)
    t_start = time.time()
    job = job.absolute()
    store = open_store(job.out)
    ids, step = job.prepare(torch.device("cpu"))  # here, once: a bad model or --rib-data never reaches a worker
    del step  # the workers load their own
    done = done_ids(store)
    todo = [i for i in ids if i not in done]
    counts = {"total": len(ids), "skipped": len(ids) - len(todo), "succeeded": 0, "failed": 0, "not_run": 0}
    failures: list[dict[str, Any]] = []
    attempted: set[str] = set()
    per_worker: dict[int, dict[str, Any]] = defaultdict(lambda: {"images": 0, "failed": 0, "busy_seconds": 0.0})
    summary: dict[str, Any] = {
        "executor": "ray",
        "out": store.uri,
        "threads_per_worker": options.threads_per_worker,
        **job.summary_fields(),
        "stopped": None,
    }
    streak = FailureStreak(job.max_consecutive_failures)
    session: RaySession | None = None
    actors: list = []
    infos: list[dict[str, Any]] = []
    left: list[str] = []
    t_compute = time.time()

    def record(outcome: ImageOutcome) -> bool:
        attempted.add(outcome.id)
        stats = per_worker[outcome.worker]
        stats["busy_seconds"] += outcome.seconds
        stats["images" if outcome.ok else "failed"] += 1
        counts["succeeded" if outcome.ok else "failed"] += 1
        if not outcome.ok:
            failures.append(outcome.failure_record())
        return streak.update(outcome)

    try:
        if todo:
            session, workers, gpus = _attach(options, device, len(todo))
            summary.update(workers=workers, gpus_per_worker=gpus, address=session.address)
            if session.remote:
                check_shared_locations(job.probes())
            actors = _start_workers(job, options, workers, gpus, device)
            infos = _wait_ready(actors, options, gpus)
            summary["startup_seconds"] = round(time.time() - t_start, 2)
            t_compute = time.time()
            with tqdm(
                total=len(todo),
                unit="img",
                desc=f"{job.title()} ({workers} workers)",
                disable=not progress,
                file=sys.stderr,
                mininterval=0.5 if sys.stderr.isatty() else 10,
            ) as bar:
                left = _dispatch(actors, todo, job, options, bar, record)
            if streak.tripped:
                summary["stopped"] = streak.message()
                raise WeaksegError(f"{summary['stopped']} (see {store.uri}/{FAILURES})")
            summary["workers_restarted"] = _restarted_ranks(actors)
            if left:
                raise WeaksegError(
                    f"every worker died; {len(left)} images were not run (see failures.jsonl and the Ray logs)"
                )
    finally:
        compute = time.time() - t_compute
        counts["not_run"] = len(todo) - counts["succeeded"] - counts["failed"]
        summary.update(counts)
        summary["seconds"] = round(time.time() - t_start, 2)
        summary["compute_seconds"] = round(compute, 2)
        summary["images_per_second"] = (
            round(counts["succeeded"] / compute, 3) if compute > 0 and counts["succeeded"] else None
        )
        summary["per_worker"] = {
            str(rank): {
                "images": stats["images"],
                "failed": stats["failed"],
                "busy_seconds": round(stats["busy_seconds"], 2),
                "images_per_second": round(stats["images"] / stats["busy_seconds"], 3)
                if stats["busy_seconds"]
                else None,
                **({"host": infos[rank]["host"], "device": infos[rank]["device"]} if 0 <= rank < len(infos) else {}),
            }
            for rank, stats in sorted(per_worker.items())
        }
        finish(store, summary, attempted, failures)
        _release(actors, session)
    return summary


def _release(actors: list, session: RaySession | None) -> None:
    """Kill this job's workers and disconnect from (or stop) the Ray this job attached to."""
    if actors:
        import ray

        for a in actors:
            ray.kill(a, no_restart=True)
    if session is not None:
        disconnect(session)
