"""`weakseg serve`: the gRPC server (domain API + KServe v2 + health + reflection) over a model repository."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from cli.common import add_device, add_parser
from weakseg.errors import WeaksegError
from weakseg.export.runtime import SPIN_WAIT_CHOICES, spin_wait_flag


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve`."""
    p = add_parser(
        sub,
        "serve",
        "serve exported models over gRPC (weakseg.v1 API and the KServe v2 / Triton protocol)",
        description="One port carries weakseg.v1.SegmentationService (Segment, Explain, Overlay, Detect,\n"
        "ListModels, GetModelMetadata),\n"
        "inference.GRPCInferenceService (KServe v2, so tritonclient works), grpc.health.v1 and\n"
        "server reflection. Health is SERVING once every model is loaded and warmed up.\n"
        "SIGTERM/SIGINT: health goes NOT_SERVING, in-flight requests finish (--grace-s).",
    )
    p.add_argument("--repo", type=Path, help="model repository written by `weakseg export` (embedded backend)")
    p.add_argument(
        "--backend",
        default="embedded",
        choices=["embedded", "triton"],
        help="embedded: onnxruntime in this process; triton: forward to a Triton server (--triton-url)",
    )
    p.add_argument(
        "--triton-url", default="127.0.0.1:8001", help="Triton gRPC endpoint (host:port) for --backend triton"
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8001, help="gRPC port (0 = any free port, printed at start)")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics HTTP port (-1 = off)")
    p.add_argument("--workers", type=int, default=16, help="RPC handler threads")
    p.add_argument("--max-concurrent-rpcs", type=int, default=64, help="beyond this, RPCs get RESOURCE_EXHAUSTED")
    p.add_argument("--max-message-mb", type=float, default=64.0, help="largest request/response message (MiB)")
    p.add_argument("--max-image-side", type=int, default=4096, help="largest image height or width accepted")
    p.add_argument(
        "--max-batch-size", type=int, default=None, help="embedded: dynamic batch limit (default: config.pbtxt)"
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=None,
        help="embedded: batcher wait to fill a batch (default: config.pbtxt)",
    )
    p.add_argument(
        "--max-queue-size", type=int, default=None, help="embedded: bounded queue per model (default: config.pbtxt)"
    )
    p.add_argument("--threads", type=int, default=None, help="embedded: onnxruntime intra-op threads per model")
    p.add_argument(
        "--ort-spin-wait",
        default="default",
        choices=SPIN_WAIT_CHOICES,
        help="embedded: onnxruntime idle threads busy-wait between runs (default: onnxruntime's, on)",
    )
    p.add_argument("--max-advcam-steps", type=int, default=27, help="per-request limit of AdvCAM steps (embedded)")
    p.add_argument(
        "--max-gradient-pixels",
        type=int,
        default=512 * 512,
        help="largest image for Grad-CAM/AdvCAM/BBAM (embedded)",
    )
    p.add_argument(
        "--max-bbam-iterations",
        type=int,
        default=300,
        help="per-request limit of BBAM Adam steps (embedded; requests default to min(100, this))",
    )
    p.add_argument(
        "--max-bbam-proposals", type=int, default=1000, help="per-request limit of BBAM proposals per box (embedded)"
    )
    p.add_argument("--max-bbam-boxes", type=int, default=8, help="per-request limit of BBAM boxes (embedded)")
    p.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        help="require one of these keys (one per line) on every RPC but health",
    )
    p.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM); with --tls-key turns TLS on")
    p.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, default=None, help="CA of client certificates: mutual TLS")
    p.add_argument("--grace-s", type=float, default=10.0, help="shutdown: time in-flight requests get to finish")
    p.add_argument(
        "--drain-s", type=float, default=0.0, help="shutdown: NOT_SERVING this long before refusing new RPCs"
    )
    p.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="structured log level"
    )
    add_device(p)
    p.set_defaults(func=run)


def _backend(args: argparse.Namespace):
    if args.backend == "triton":
        from serving.backends.triton import TritonBackend
        from serving.server import MiB

        return TritonBackend(args.triton_url, max_message_bytes=int(args.max_message_mb * MiB))
    from serving.backends.embedded import EmbeddedBackend, RepositoryError
    from serving.batching import BatchingOptions

    if args.repo is None:
        raise WeaksegError("--repo is required with --backend embedded")
    batching = None
    if any(v is not None for v in (args.max_batch_size, args.max_queue_delay_us, args.max_queue_size)):
        d = BatchingOptions()
        batching = BatchingOptions(
            max_batch_size=args.max_batch_size or d.max_batch_size,
            max_queue_delay_s=(
                d.max_queue_delay_s if args.max_queue_delay_us is None else args.max_queue_delay_us / 1e6
            ),
            max_queue_size=args.max_queue_size or d.max_queue_size,
        )
    try:
        return EmbeddedBackend(
            args.repo,
            device=args.device,
            threads=args.threads,
            batching=batching,
            spin_wait=spin_wait_flag(args.ort_spin_wait),
        )
    except (RepositoryError, ValueError) as e:
        raise WeaksegError(str(e)) from e


def server_config(args: argparse.Namespace):
    """ServerConfig from the command line."""
    from serving.auth import TlsFiles, read_keys
    from serving.explain import GradientLimits
    from serving.images import ImageLimits
    from serving.server import MiB, ServerConfig

    if (args.tls_cert is None) != (args.tls_key is None):
        raise WeaksegError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise WeaksegError("--tls-client-ca needs --tls-cert and --tls-key")
    for path in (args.tls_cert, args.tls_key, args.tls_client_ca, args.api_key_file):
        if path is not None and not path.is_file():
            raise WeaksegError(f"{path}: file not found")
    try:
        keys = read_keys(args.api_key_file) if args.api_key_file else frozenset()
    except ValueError as e:
        raise WeaksegError(str(e)) from e
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    gradients = GradientLimits(
        max_pixels=args.max_gradient_pixels,
        max_advcam_steps=args.max_advcam_steps,
        default_advcam_steps=min(27, args.max_advcam_steps),
        device="cuda" if args.device == "cuda" else "cpu",
        max_bbam_iterations=args.max_bbam_iterations,
        default_bbam_iterations=min(100, args.max_bbam_iterations),
        max_bbam_proposals=args.max_bbam_proposals,
        default_bbam_proposals=args.max_bbam_proposals,
        max_bbam_boxes=args.max_bbam_boxes,
    )
    side = args.max_image_side
    return ServerConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_message_bytes=int(args.max_message_mb * MiB),
        images=ImageLimits(max_side=side, max_pixels=side * side),
        gradients=gradients,
        api_keys=keys,
        tls=tls,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        metrics_host="127.0.0.1" if args.host in ("127.0.0.1", "localhost") else args.host,
        grace_s=args.grace_s,
        drain_s=args.drain_s,
    )


def run(args: argparse.Namespace) -> int:
    """Start the server and block until SIGTERM/SIGINT."""
    from serving.rpc import configure_logging, log
    from serving.server import WeaksegServer

    configure_logging(args.log_level)
    config = server_config(args)
    backend = _backend(args)
    server = WeaksegServer(backend, config)
    try:
        port = server.start()
    except OSError as e:
        backend.close()
        raise WeaksegError(str(e)) from e
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    models = [m.name for m in backend.models()]
    log.info(
        "serving",
        extra={
            "fields": {
                "port": port,
                "metrics_port": server.metrics_port,
                "backend": backend.name,
                "models": models,
                "tls": config.tls is not None,
                "auth": bool(config.api_keys),
            }
        },
    )
    print(
        f"weakseg serving {', '.join(models)} on {config.host}:{port} ({backend.name} backend)",
        file=sys.stderr,
        flush=True,
    )
    stop.wait()
    log.info("shutting down", extra={"fields": {"grace_s": config.grace_s}})
    server.stop()
    return 0
