"""Segment latency and throughput over gRPC against onnxruntime called directly, at several concurrencies,
with and without the embedded backend's dynamic batching.

    python benchmarks/serving_latency.py [--repo REPO] [--size 256] [--concurrency 1 8 32] [--requests 300]
                                         [--threads 2] [--out FILE]

The server is `weakseg serve` in its own process (onnxruntime with --threads intra-op threads); the load
comes from client threads in this process, each sending raw uint8 images and asking for the raw mask. The
raw figure is the same ONNX model in an onnxruntime session with the same thread count, here, on the same
input, timed in rounds interleaved with single Segment calls (so drifting machine load hits both alike). Without --repo a freshly initialised default segmenter (LR-ASPP MobileNetV3, 8 classes) is exported
at --size (latency does not depend on the weights). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from serving_common import ROOT, ServerProcess, channel, default_repository, segment_request

from serving.api import segmentation_pb2_grpc as pb_grpc  # noqa: E402
from weakseg.export.runtime import ort_session  # noqa: E402
from weakseg.io import atomic_write_json  # noqa: E402


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds."""
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def overhead(repo: Path, address: str, size: int, threads: int, rounds: int, per_round: int) -> dict:
    """Batch-1 latency of onnxruntime called directly vs Segment over gRPC, interleaved in rounds so that drifting
    load on the machine affects both alike; each side's p50 over all its calls, and their ratio."""
    session = ort_session((repo / "seg" / "1" / "model.onnx").read_bytes(), threads=threads)
    request = segment_request(size)
    pixels = np.frombuffer(request.image.raw.data, np.uint8).reshape(1, size, size, 3)
    names = [o.name for o in session.get_outputs()]
    ch = channel(address)
    stub = pb_grpc.SegmentationServiceStub(ch)
    calls = {"raw": lambda: session.run(names, {"pixels": pixels}), "grpc": lambda: stub.Segment(request, timeout=60)}
    times: dict[str, list[float]] = {"raw": [], "grpc": []}
    for fn in calls.values():
        for _ in range(10):
            fn()
    for _ in range(rounds):
        for side, fn in calls.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[side].append(time.perf_counter() - t0)
    ch.close()
    raw, grpc_ = percentiles(times["raw"]), percentiles(times["grpc"])
    return {"raw_onnxruntime": raw, "grpc_segment": grpc_, "ratio_p50": round(grpc_["p50_ms"] / raw["p50_ms"], 3),
            "calls_per_side": rounds * per_round}


def load(address: str, size: int, concurrency: int, requests: int) -> dict[str, float]:
    """`requests` Segment calls spread over `concurrency` client threads (closed loop); latency and throughput."""
    ch = channel(address)
    stub = pb_grpc.SegmentationServiceStub(ch)
    request = segment_request(size)
    for _ in range(10):
        stub.Segment(request, timeout=60)
    per_thread = max(1, requests // concurrency)
    times: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        mine = []
        for _ in range(per_thread):
            t0 = time.perf_counter()
            try:
                stub.Segment(request, timeout=60)
                mine.append(time.perf_counter() - t0)
            except Exception:  # counted; a benchmark reports errors rather than stopping
                with lock:
                    errors[0] += 1
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ch.close()
    return {"concurrency": concurrency, "requests": len(times) + errors[0], "errors": errors[0],
            "throughput_rps": round(len(times) / wall, 2), **percentiles(times)}


def main() -> None:
    """Measure raw onnxruntime, then the server with and without batching; print the table and JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=None, help="model repository with a segmenter entry 'seg'")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "cache" / "serving")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=320, help="requests per concurrency level")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (server and raw session)")
    p.add_argument("--ort-spin-wait", default="default", choices=["on", "off", "default"],
                   help="the server's onnxruntime idle busy-wait (the raw session keeps onnxruntime's default)")
    p.add_argument("--server-cpus", type=int, nargs="+", default=None,
                   help="pin the server to these cores (and the client, raw session included, to the others)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    server_cpus = set(args.server_cpus) if args.server_cpus else None
    if server_cpus:
        client_cpus = os.sched_getaffinity(0) - server_cpus
        if not client_cpus:
            p.error("--server-cpus leaves no core for the client")
        os.sched_setaffinity(0, client_cpus)
    repo = args.repo or default_repository(args.work, args.size)
    results: dict = {"batching": {}, "no_batching": {}}
    for label, extra in (("no_batching", ["--max-batch-size", "1"]), ("batching", [])):
        server = ServerProcess(repo, args.threads, [*extra, "--ort-spin-wait", args.ort_spin_wait], server_cpus)
        try:
            if label == "no_batching":
                results["overhead_c1"] = overhead(repo, server.address, args.size, args.threads, rounds=10, per_round=20)
            for c in args.concurrency:
                results[label][str(c)] = load(server.address, args.size, c, args.requests)
        finally:
            server.stop()
    results["setup"] = {"size": args.size, "threads": args.threads, "ort_spin_wait": args.ort_spin_wait,
                        "cpus": os.cpu_count(), "server_cpus": sorted(server_cpus or []),
                        "client_cpus": sorted(os.sched_getaffinity(0)),
                        "machine": platform.machine(), "model": "LR-ASPP MobileNetV3 (weakseg default segmenter)"}
    o = results["overhead_c1"]
    print(f"batch 1, interleaved: raw onnxruntime p50 {o['raw_onnxruntime']['p50_ms']} ms, Segment over gRPC p50 "
          f"{o['grpc_segment']['p50_ms']} ms, ratio {o['ratio_p50']}")
    print("| server | concurrency | p50 ms | p99 ms | requests/s | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label in ("no_batching", "batching"):
        for c, r in results[label].items():
            print(f"| {label} | {c} | {r['p50_ms']} | {r['p99_ms']} | {r['throughput_rps']} | {r['errors']} |")
    if args.out:
        atomic_write_json(args.out, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
