"""Connecting to Ray (a local instance started in-process, or an existing cluster) and the up-front checks.

On a cluster every node must see the same --data, --model and --out: `check_shared_locations` runs a
probe on every alive node that fingerprints the split list, the weights file and the manifest the driver
just wrote, and refuses the job (naming node and path) when a node sees something else or nothing.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch.store import ArrowStore, LocalStore
from weakseg.errors import WeaksegError

# Local runs only: no auth token, no cluster-on-macOS prompt, no usage-stats network call.
LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for drivers started with `ray job submit`


@dataclass(frozen=True)
class RayOptions:
    """Execution settings (never recorded in the manifest: changing them never invalidates an output folder)."""

    workers: int | None = None  # None: one per GPU, else CPUs // threads_per_worker
    threads_per_worker: int = 1
    gpus_per_worker: float | None = None  # None: 1 per worker when the device is cuda (or auto and GPUs exist)
    address: str | None = None  # None: RAY_ADDRESS, else a local Ray started in-process; "local" forces local
    object_store_mb: int = 512  # local instance only
    max_worker_restarts: int = 8  # per worker; Ray replaces a dead worker up to this many times
    inflight_per_worker: int = 2  # images queued on each worker (hides the driver round trip)


@dataclass(frozen=True)
class RaySession:
    """How this process is attached to Ray."""

    started_here: bool  # we called ray.init (so we shut it down)
    remote: bool  # an existing (possibly multi-node) cluster: locations must be shared
    address: str  # "local" or the cluster address


def cluster_address(options: RayOptions) -> str | None:
    """The cluster to join: --address, else RAY_ADDRESS, else None (start a local Ray)."""
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


def code_runtime_env() -> dict[str, Any] | None:
    """Ship weakseg and batch to the cluster's workers, unless this driver runs inside `ray job submit`."""
    if os.environ.get(JOB_ENV_VAR):
        return None
    import batch
    import weakseg

    return {"py_modules": [str(Path(weakseg.__file__).parent), str(Path(batch.__file__).parent)]}


def connect(options: RayOptions, local_cpus: int) -> RaySession:
    """Join the configured cluster or start a local Ray with `local_cpus` CPUs (reuses an initialised Ray)."""
    import ray

    if ray.is_initialized():
        alive = [n for n in ray.nodes() if n.get("Alive")]
        return RaySession(started_here=False, remote=len(alive) > 1, address="existing")
    address = cluster_address(options)
    if address:
        try:
            ray.init(address=address, runtime_env=code_runtime_env())
        except ConnectionError as e:
            raise WeaksegError(f"--address {address}: cannot reach a Ray cluster there ({e})") from e
        return RaySession(started_here=True, remote=True, address=address)
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(
        address="local" if os.environ.get("RAY_ADDRESS") else None,
        num_cpus=max(1, local_cpus),
        object_store_memory=options.object_store_mb * 2**20,
        include_dashboard=False,
    )
    return RaySession(started_here=True, remote=False, address="local")


def disconnect(session: RaySession) -> None:
    """Shut down what `connect` started (a local instance, or this driver's cluster connection)."""
    import ray

    if session.started_here and ray.is_initialized():
        ray.shutdown()


@dataclass(frozen=True)
class Probe:
    """A location every node must see identically: a file path, or a key in an output store."""

    what: str  # "--data", "--model", "--out"
    path: str = ""
    store: LocalStore | ArrowStore | None = None
    key: str = ""
    fingerprint: str = ""

    def where(self) -> str:
        """The probed location as a message names it: the path, or the store's URI and key."""
        if self.store is None:
            return self.path
        return self.path or f"{self.store.uri}/{self.key}"


DIR_FINGERPRINT = "folder"  # a probe of a folder checks only that every node has it


def fingerprint(data: bytes, size: int) -> str:
    """Size plus sha256 of the first MiB: cheap, and enough to tell files apart."""
    return f"{size}:{hashlib.sha256(data[: 1 << 20]).hexdigest()}"


def file_fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint of a file (reads at most 1 MiB)."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return fingerprint(head, os.path.getsize(path))


def run_probes(probes: list[Probe]) -> tuple[str, list[str]]:
    """On one node: (hostname, problems) for the probes this node does not see as the driver does."""
    problems = []
    for p in probes:
        try:
            if p.store is not None:
                data = p.store.read_bytes(p.key)
                seen = None if data is None else fingerprint(data, len(data))
            else:
                seen = file_fingerprint(p.path) if os.path.isfile(p.path) else None
                if p.fingerprint == DIR_FINGERPRINT:
                    seen = DIR_FINGERPRINT if os.path.isdir(p.path) else None
        except Exception as e:  # unreadable counts as not visible
            problems.append(f"{p.what} {p.where()}: unreadable ({type(e).__name__}: {e})")
            continue
        where = p.where()
        if seen is None:
            problems.append(f"{p.what} {where}: not found")
        elif seen != p.fingerprint:
            problems.append(f"{p.what} {where}: differs from the driver's copy")
    return socket.gethostname(), problems


def check_shared_locations(probes: list[Probe], timeout_s: float = 300.0) -> None:
    """Run the probes on every alive node with CPUs; WeaksegError naming each node and path that fails."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    task = ray.remote(num_cpus=0, max_retries=1)(run_probes)
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(probes)
        for n in nodes
    ]
    lines = []
    for node, (host, problems) in zip(nodes, ray.get(refs, timeout=timeout_s), strict=True):
        lines += [f"node {node.get('NodeManagerAddress', '?')} ({host}): {msg}" for msg in problems]
    if lines:
        raise WeaksegError(
            "on a Ray cluster --data, --model and --out must be visible to every node (a shared "
            "filesystem or an object-store URI): "
            + "; ".join(lines[:6])
            + (f"; and {len(lines) - 6} more" if len(lines) > 6 else "")
        )
