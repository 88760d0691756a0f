"""Where the batch-1 Segment time goes: onnxruntime alone, the embedded backend (dynamic batcher) in process, the
per-class softmax scores, the Segment handler called in process (no transport), the server's own handler time (its
/metrics histogram) and the client's round trip.
With --in-graph-scores it also times the alternative of computing the scores inside the exported graph (a variant
graph with a `scores` output, run for mask + scores only, so no logits leave onnxruntime).

    python benchmarks/serving_breakdown.py [--size 256] [--threads 2] [--calls 200] [--in-graph-scores]
        [--ort-spin-wait on|off|default]

Same default model and input as benchmarks/serving_latency.py. Prints medians (in-process parts) and means (the
handler time, from the server's latency histogram) in milliseconds, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

import numpy as np

from serving_common import ROOT, ServerProcess, channel, default_repository, free_port, segment_request

from serving.api import segmentation_pb2_grpc as pb_grpc  # noqa: E402
from serving.backends.embedded import EmbeddedBackend  # noqa: E402
from serving.batching import BatchingOptions  # noqa: E402
from serving.domain import SegmentationService, softmax_peaks  # noqa: E402
from serving.metrics import ServingMetrics  # noqa: E402
from weakseg.export.runtime import SPIN_WAIT_CHOICES, ort_session, spin_wait_flag  # noqa: E402


def median_ms(fn, calls: int) -> float:
    """Median milliseconds of `calls` calls of fn() after 10 untimed ones."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 3)


def in_graph_scores_session(work, size: int, threads: int):
    """onnxruntime session over the default segmenter exported with an extra `scores` output (peak softmax per class)."""
    import torch

    from weakseg.export.graphs import SegmenterGraph
    from weakseg.export.onnx_export import export_onnx
    from weakseg.models.segmenter_io import load_segmenter

    class WithScores(SegmenterGraph):
        def forward(self, pixels: torch.Tensor):  # noqa: D102 - the variant under test
            logits, mask = super().forward(pixels)
            return mask, torch.softmax(logits, dim=1).amax(dim=(2, 3))

    model, _ = load_segmenter(work / "seg.safetensors")
    graph = WithScores(model.eval())
    onnx_bytes = export_onnx(graph, torch.zeros((2, size, size, 3), dtype=torch.uint8), ("mask", "scores"))
    return ort_session(onnx_bytes, threads=threads)


class InProcessContext:
    """The parts of grpc.ServicerContext the Segment handler uses, for timing it without a transport."""

    def invocation_metadata(self) -> tuple:
        return ()

    def set_trailing_metadata(self, metadata) -> None:
        pass

    def time_remaining(self) -> float:
        return 60.0

    def abort(self, code, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


def metric(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus exposition."""
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def main() -> None:
    """Time each part and print them."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--in-graph-scores", action="store_true", help="also time a graph that computes the scores itself")
    p.add_argument("--ort-spin-wait", default="default", choices=SPIN_WAIT_CHOICES, help="server and backend")
    args = p.parse_args()
    spin = spin_wait_flag(args.ort_spin_wait)
    work = ROOT / "benchmarks" / "results" / "cache" / "serving"
    repo = default_repository(work, args.size)
    request = segment_request(args.size)
    pixels = np.frombuffer(request.image.raw.data, np.uint8).reshape(1, args.size, args.size, 3)
    session = ort_session((repo / "seg" / "1" / "model.onnx").read_bytes(), threads=args.threads)
    names = [o.name for o in session.get_outputs()]
    out: dict[str, float] = {"onnxruntime_ms": median_ms(lambda: session.run(names, {"pixels": pixels}), args.calls)}
    if args.in_graph_scores:
        variant = in_graph_scores_session(work, args.size, args.threads)
        out["onnxruntime_in_graph_scores_ms"] = median_ms(lambda: variant.run(["mask", "scores"], {"pixels": pixels}), args.calls)
        out["onnxruntime_again_ms"] = median_ms(lambda: session.run(names, {"pixels": pixels}), args.calls)
        del variant
    backend = EmbeddedBackend(repo, device="cpu", threads=args.threads, batching=BatchingOptions(max_batch_size=1),
                              spin_wait=spin)
    try:
        out["embedded_backend_ms"] = median_ms(lambda: backend.infer("seg", {"pixels": pixels}, ["logits", "mask"]), args.calls)
        service = SegmentationService(backend, ServingMetrics())
        out["in_process_handler_ms"] = median_ms(lambda: service.Segment(request, InProcessContext()), args.calls)
    finally:
        backend.close()
    logits = session.run(["logits"], {"pixels": pixels})[0][0]
    out["softmax_scores_ms"] = median_ms(lambda: softmax_peaks(logits), args.calls)
    port = free_port()
    server = ServerProcess(repo, args.threads, ["--max-batch-size", "1", "--metrics-port", str(port),
                                                    "--ort-spin-wait", args.ort_spin_wait])
    try:
        stub = pb_grpc.SegmentationServiceStub(channel(server.address))
        out["client_round_trip_ms"] = median_ms(lambda: stub.Segment(request, timeout=60), args.calls)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        total = metric(text, 'weakseg_rpc_latency_seconds_sum{rpc="Segment"}')
        count = metric(text, 'weakseg_rpc_latency_seconds_count{rpc="Segment"}')
        out["server_handler_mean_ms"] = round(total / count * 1000, 3)
    finally:
        server.stop()
    for k, v in out.items():
        print(f"{k}: {v}")
    print(json.dumps({**out, "size": args.size, "threads": args.threads, "ort_spin_wait": args.ort_spin_wait}))


if __name__ == "__main__":
    main()
