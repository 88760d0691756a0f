"""A fixed-rate load run against `weakseg serve`: errors by status code and the server's memory over time.

    python benchmarks/serving_load.py [--rate 10] [--seconds 60] [--size 256] [--threads 2] [--out FILE]

Open loop: request i is sent at start + i / rate whatever the answers do (futures), so a server that falls
behind shows it as latency and errors instead of slowing the load down. The server's resident memory is
read from /proc at the start (after warm-up), every 10 s and at the end. Prints the figures and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from serving_common import ROOT, ServerProcess, channel, default_repository, segment_request

from serving.api import segmentation_pb2_grpc as pb_grpc  # noqa: E402
from weakseg.io import atomic_write_json  # noqa: E402


def main() -> None:
    """Run the load, print latency percentiles, error counts and RSS at start and end."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=None, help="model repository with a segmenter entry 'seg'")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "cache" / "serving")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    repo = args.repo or default_repository(args.work, args.size)
    server = ServerProcess(repo, args.threads)
    ch = channel(server.address)
    stub = pb_grpc.SegmentationServiceStub(ch)
    request = segment_request(args.size)
    try:
        for _ in range(20):
            stub.Segment(request, timeout=60)
        rss = [(0.0, round(server.rss_mib(), 1))]
        n = int(args.rate * args.seconds)
        futures, done = [], []
        t0 = time.perf_counter()
        next_sample = 10.0
        for i in range(n):
            due = t0 + i / args.rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(0.005, due - now))
            start = time.perf_counter()
            future = stub.Segment.future(request, timeout=30)
            future.add_done_callback(lambda f, start=start: done.append(time.perf_counter() - start))
            futures.append(future)
            if now - t0 >= next_sample:
                rss.append((round(now - t0, 1), round(server.rss_mib(), 1)))
                next_sample += 10.0
        codes: Counter = Counter()
        for f in futures:
            try:
                f.result()
                codes["OK"] += 1
            except grpc.RpcError as e:
                codes[e.code().name] += 1
        wall = time.perf_counter() - t0
        rss.append((round(time.perf_counter() - t0, 1), round(server.rss_mib(), 1)))
    finally:
        ch.close()
        server.stop()
    result = {"rate_rps": args.rate, "seconds": args.seconds, "requests": n, "codes": dict(codes),
              "errors": n - codes["OK"], "achieved_rps": round(codes["OK"] / wall, 2),
              "rss_mib_start": rss[0][1], "rss_mib_end": rss[-1][1], "rss_mib_samples": rss,
              "p50_ms": round(float(np.percentile(np.asarray(done) * 1000, 50)), 2),
              "p99_ms": round(float(np.percentile(np.asarray(done) * 1000, 99)), 2), "size": args.size,
              "threads": args.threads}
    print(f"{n} requests at {args.rate}/s over {args.seconds:.0f} s: {dict(codes)}; p50 {result['p50_ms']} ms, "
          f"p99 {result['p99_ms']} ms; RSS {rss[0][1]} MiB at start, "
          f"{rss[-1][1]} MiB at the end")
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
