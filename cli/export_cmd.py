"""`weakseg export`: a segmenter, CAM classifier, detector or Mask R-CNN checkpoint -> a Triton model-repository
entry (ONNX)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import add_parser, add_threads


def register(sub: argparse._SubParsersAction) -> None:
    """Add `export`."""
    p = add_parser(
        sub,
        "export",
        "export a segmenter, CAM classifier, detector or Mask R-CNN to ONNX as a Triton model-repository entry",
        description="Writes <repo>/<name>/config.pbtxt, <repo>/<name>/<version>/model.onnx and labels.txt.\n"
        "The graph takes 'pixels': uint8 RGB NHWC [batch, height, width, 3] (0..255; normalisation "
        "inside the graph). Segmenters output 'logits' [batch, C+1, H, W] and 'mask' uint8 [batch, H, W]; "
        "classifiers output 'logits' [batch, C] and 'cams' [batch, C, H, W] (Eq. 2.1, single scale).\n"
        "Detectors and Mask R-CNNs take one image, 'pixels' uint8 [H, W, 3] (max_batch_size 0), and output\n"
        "'boxes' [N, 4], 'scores' [N], 'labels' int64 [N] (+ 'masks' [N, H, W] probabilities); their\n"
        "PyTorch checkpoint goes beside the ONNX (BBAM explanations on the embedded backend).\n"
        "Nothing is written unless onnxruntime matches PyTorch on an untraced input size (detections:\n"
        "matched one to one by label and IoU, at the export size and a second size).",
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="run folder or .safetensors file (segmenter, classifier, detector or instance)",
    )
    p.add_argument("--repo", type=Path, required=True, help="Triton model repository folder")
    p.add_argument("--name", required=True, help="model name (folder under --repo)")
    p.add_argument("--version", type=int, default=1, help="model version (sub-folder)")
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="trace and warm-up side (default: training crop, a detector's min size, else 128)",
    )
    p.add_argument(
        "--trace-image",
        type=Path,
        default=None,
        help="detectors: trace input, resized to the input size; the detector must find an object in it "
        "(default: the first synthetic image it finds one in)",
    )
    p.add_argument("--cpu", action="store_true", help="CPU variant: instance_group KIND_CPU instead of KIND_GPU")
    p.add_argument("--instances", type=int, default=1, help="model instances (instance_group count)")
    p.add_argument("--max-batch-size", type=int, default=8, help="largest batch the dynamic batcher forms")
    p.add_argument("--max-queue-size", type=int, default=64, help="bounded queue: requests beyond it are rejected")
    p.add_argument("--queue-timeout-ms", type=float, default=1000.0, help="requests queued longer are rejected")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, help="how long the batcher waits to fill a batch")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="parity: max abs logits difference onnxruntime vs PyTorch (segmenters, classifiers)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing version")
    p.add_argument(
        "--python-backend-repo",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write a python-backend variant of the entry to DIR/<name> (model.py runs the ONNX with "
        "onnxruntime on CPU; for Triton builds without the ONNX Runtime backend, e.g. nvidia-pytriton's)",
    )
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, print the JSON summary (parity included)."""
    from weakseg.device import set_threads
    from weakseg.export import ExportOptions, ServingOptions, export_model

    set_threads(args.threads)
    preferred = tuple(sorted({max(1, args.max_batch_size // 2), args.max_batch_size}))
    serving = ServingOptions(
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=args.max_queue_delay_us,
        max_queue_size=args.max_queue_size,
        queue_timeout_us=max(1, round(args.queue_timeout_ms * 1000)),
        instance_kind="cpu" if args.cpu else "gpu",
        instance_count=args.instances,
    )
    options = ExportOptions(
        version=args.version,
        input_size=args.input_size,
        serving=serving,
        tolerance=args.tolerance,
        force=args.force,
        trace_image=args.trace_image,
    )
    result = export_model(args.model, args.repo, args.name, options)
    summary = result.to_json()
    if args.python_backend_repo is not None:
        from weakseg.export.python_backend import write_python_backend_entry

        summary["python_backend"] = str(
            write_python_backend_entry(
                result.model_dir, args.python_backend_repo, versions=[args.version], force=args.force
            )
        )
    print(json.dumps(summary))
    return 0
