"""The Ray actor of a per-image job (pseudo labels, refine): loads the job's model once, then computes and writes
images by id."""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any

from batch.faults import FaultInjector
from batch.image_job import ImageJob, ImageOutcome, process_image
from batch.store import open_store


def _was_restarted() -> bool:
    """Whether this actor process replaces one that died (Ray re-ran the constructor)."""
    import ray

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def worker_device(device: str, gpus_per_worker: float) -> str:
    """The torch device a worker uses: cuda when Ray gave it GPUs, else cpu unless cuda was asked for."""
    return "cuda" if gpus_per_worker > 0 else ("cpu" if device == "auto" else device)


class ImageWorker:
    """One worker process: the job's per-image step (model, dataset reader) and output store, held for the job."""

    def __init__(self, job: ImageJob, rank: int, device: str, threads: int) -> None:
        """Fix the torch thread count, check the job's paths on this node and open its step on `device` (the model
        loaded once). A path missing here fails the worker's start, naming the flag, path and host."""
        import torch

        from weakseg.device import resolve_device

        torch.set_num_threads(threads)
        job.check_paths()
        self.job, self.rank, self.threads = job, rank, threads
        self.restarted = _was_restarted()
        self.device = resolve_device(device)
        self.store = open_store(job.out)
        self.step = job.open_step(self.device)
        self.faults = FaultInjector.from_env(rank, self.restarted)

    def ready(self) -> dict[str, Any]:
        """Where this worker runs (node, pid, device, threads); the driver waits on it before dispatching."""
        import torch

        return {
            "rank": self.rank,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "restarted": self.restarted,
        }

    def process(self, image_id: str) -> ImageOutcome:
        """Compute and write one image; failures come back as an outcome, never as an exception."""
        self.faults.before_image()
        outcome = process_image(self.job, self.step, image_id, self.store)
        outcome.worker = self.rank
        return outcome
