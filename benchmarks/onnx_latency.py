"""Segmenter inference latency: PyTorch eager vs onnxruntime (CPU provider) on the exported graph.

    python benchmarks/onnx_latency.py [--model RUN] [--size 128] [--batches 1 8] [--runs 50] [--threads 2]

Both sides run the same uint8-pixels -> (logits, mask) graph (weakseg.export.graphs.SegmenterGraph) on the
same inputs, with the same intra-op thread count; each figure is the median of --runs timed calls after
--warmup untimed ones. Without --model a freshly initialised network of --arch is timed (latency does not
depend on the weight values). Prints a table and, last, one JSON line; --out also writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from weakseg.export.graphs import SEGMENTER_OUTPUTS, SegmenterGraph
from weakseg.export.onnx_export import check_parity, export_onnx, ort_session
from weakseg.io import atomic_write_json
from weakseg.models.segmenter import ARCHS, DEFAULT_ARCH, Segmenter, SegmenterConfig


def time_calls(fn, runs: int, warmup: int) -> list[float]:
    """Seconds of each of `runs` calls of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summarise(seconds: list[float], batch: int) -> dict[str, float]:
    """Median, 10th and 90th percentile in milliseconds, and images per second at the median."""
    ms = np.asarray(seconds) * 1000
    median = float(statistics.median(ms))
    return {"median_ms": round(median, 3), "p10_ms": round(float(np.percentile(ms, 10)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "img_per_s": round(batch * 1000 / median, 1)}


def main() -> None:
    """Export, check parity, time both runtimes at each batch size, print the table and JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="segmenter run folder (default: a fresh --arch network)")
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=sorted(ARCHS), help="architecture when no --model is given")
    p.add_argument("--classes", type=int, default=8, help="foreground classes when no --model is given (benchmark default: 8)")
    p.add_argument("--size", type=int, default=128, help="input height and width (the synthetic benchmark's default size)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes")
    p.add_argument("--runs", type=int, default=50, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for both runtimes")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    if args.model is not None:
        from weakseg.models.segmenter_io import load_segmenter

        model, _ = load_segmenter(args.model)
    else:
        torch.manual_seed(0)
        model = Segmenter(SegmenterConfig(num_classes=args.classes + 1, arch=args.arch)).eval()
    graph = SegmenterGraph(model).eval()
    t0 = time.perf_counter()
    onnx_bytes = export_onnx(graph, torch.zeros((2, args.size, args.size, 3), dtype=torch.uint8), SEGMENTER_OUTPUTS)
    export_s = time.perf_counter() - t0
    parity = check_parity(onnx_bytes, graph, args.size + 8, args.size + 24)
    session = ort_session(onnx_bytes, threads=args.threads)

    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        pixels = rng.integers(0, 256, size=(batch, args.size, args.size, 3), dtype=np.uint8)
        tensor = torch.from_numpy(pixels)

        def eager() -> None:
            with torch.inference_mode():
                graph(tensor)

        def onnxrt() -> None:
            session.run(None, {"pixels": pixels})

        torch_stats = summarise(time_calls(eager, args.runs, args.warmup), batch)
        ort_stats = summarise(time_calls(onnxrt, args.runs, args.warmup), batch)
        rows.append({"batch": batch, "torch_eager": torch_stats, "onnxruntime_cpu": ort_stats,
                     "speedup": round(torch_stats["median_ms"] / ort_stats["median_ms"], 2)})

    arch = model.config.arch
    print(f"{arch}, {args.size}x{args.size} uint8 input, {args.threads} threads, median of {args.runs} runs "
          f"(parity {'ok' if parity.ok else 'FAILED'}: max |logits diff| {parity.max_abs_diff:.2g})")
    print(f"{'batch':>5}  {'torch eager ms':>14}  {'onnxruntime ms':>14}  {'eager/ort':>9}")
    for r in rows:
        print(f"{r['batch']:>5}  {r['torch_eager']['median_ms']:>14.2f}  {r['onnxruntime_cpu']['median_ms']:>14.2f}  {r['speedup']:>9.2f}")
    import onnxruntime

    result = {"arch": arch, "size": args.size, "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
              "rows": rows, "parity": parity.to_json(), "export_s": round(export_s, 1),
              "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
              "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}}
    if args.out is not None:
        atomic_write_json(args.out, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
