"""`weakseg demo`: synth -> classifier -> CAM and Grad-CAM -> CRF -> evaluation table -> overlays, one report.

Every stage is resumable: re-running the demo into the same folder reuses what is finished.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import add_device, add_parser, add_threads


def register(sub: argparse._SubParsersAction) -> None:
    """Add `demo`."""
    p = add_parser(
        sub,
        "demo",
        "run the whole pipeline on the synthetic benchmark and write a report comparing methods",
        description="synth -> train a CAM classifier -> CAM and Grad-CAM maps -> dense CRF -> seed evaluation -> "
        "segmenter on the pseudo labels -> ONNX export into a Triton model repository -> "
        "Markdown report with overlay pictures. Finishes in under 10 minutes on a 2-core CPU; "
        "re-running into the same folder reuses finished stages.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output folder (dataset, runs, pseudo labels, report)"
    )
    p.add_argument("--seed", type=int, default=0, help="benchmark and training seed")
    p.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="classifier epochs (the trainer's default of 12 gives better maps; 4 fits the 10-minute budget)",
    )
    p.add_argument(
        "--arch",
        default="resnet18",
        help="classifier backbone: resnet18|resnet50|resnet101|efficientnet-lite0|lite1|lite2 (see train classifier)",
    )
    p.add_argument(
        "--pretrained",
        default=None,
        type=lambda s: None if s == "none" else s,
        help="backbone init, as `train classifier --pretrained` (e.g. efficientnet-lite0 with --arch "
        "efficientnet-lite0); default none: from scratch, which gives the better maps on the synthetic benchmark "
        "(README: demo with pretrained weights)",
    )
    p.add_argument("--eval-images", type=int, default=60, help="train images that get maps and seed evaluation")
    p.add_argument("--methods", nargs="+", default=["cam", "gradcam"], help="attribution methods to compare")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5], help="inference scales for the maps")
    p.add_argument(
        "--segmenter-epochs", type=int, default=15, help="epochs of the segmenter trained on the pseudo labels"
    )
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run every stage, print the report path and the summary JSON."""
    from cli.demo_pipeline import DemoConfig, run_demo

    cfg = DemoConfig(
        out=args.out,
        seed=args.seed,
        epochs=args.epochs,
        arch=args.arch,
        pretrained=args.pretrained,
        eval_images=args.eval_images,
        methods=tuple(args.methods),
        scales=tuple(args.scales),
        segmenter_epochs=args.segmenter_epochs,
        device=args.device,
        threads=args.threads,
    )
    summary = run_demo(cfg)
    print(f"report: {summary['report']}")
    print(json.dumps(summary))
    return 0
