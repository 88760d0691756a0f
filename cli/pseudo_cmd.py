"""`weakseg pseudo`: attribution maps and pseudo-label PNGs for a dataset split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import add_device, add_parser, add_threads
from cli.method_args import add_method_options, method_from_args, multiscale_from_args
from weakseg.device import resolve_device, set_threads
from weakseg.errors import WeaksegError


def add_label_options(p: argparse.ArgumentParser) -> None:
    """--fg-thresh/--bg-thresh/--crf: how maps become label PNGs."""
    p.add_argument("--fg-thresh", type=float, default=0.30, help="foreground where the best class map exceeds this (IRN: 0.30)")
    p.add_argument("--bg-thresh", type=float, default=0.05, help="background where every class map is below this (IRN: 0.05); 255 in between")
    p.add_argument("--crf", action="store_true", help="refine the foreground and background seeds with the dense CRF (IRN's rule)")


def label_config_from_args(args: argparse.Namespace):
    """LabelConfig from --fg-thresh/--bg-thresh/--crf."""
    from weakseg.pseudo import LabelConfig
    from weakseg.refine.crf import CRFConfig

    if not 0 <= args.bg_thresh <= args.fg_thresh <= 1:
        raise WeaksegError(f"need 0 <= --bg-thresh <= --fg-thresh <= 1, got {args.bg_thresh} and {args.fg_thresh}")
    return LabelConfig(fg_thresh=args.fg_thresh, bg_thresh=args.bg_thresh, crf=CRFConfig() if args.crf else None)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `pseudo`."""
    p = add_parser(sub, "pseudo", "generate attribution maps (maps/<id>.npz) and pseudo labels (labels/<id>.png) for a split")
    p.add_argument("--model", type=Path, required=True, help="classifier run folder or .safetensors file")
    p.add_argument("--data", type=Path, required=True, help="VOC2012-layout dataset folder")
    p.add_argument("--split", default="train", help="split name or list file")
    p.add_argument("--out", type=Path, required=True, help="output folder; re-running skips finished images, a different configuration is refused")
    p.add_argument("--labels", default="auto", help="image-level label source: xml, auto or a cls_labels.npy path")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    p.add_argument("--retries", type=int, default=1, help="extra attempts for an image that fails before recording it in failures.jsonl")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_method_options(p)
    add_label_options(p)
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the pseudo-label job and print its summary JSON; exit 1 if any image failed."""
    from batch.pseudo_job import PseudoJob, run_local

    set_threads(args.threads)
    try:
        method = method_from_args(args)
    except ValueError as e:
        raise WeaksegError(str(e)) from e
    job = PseudoJob(method=method, model=args.model, data=args.data, split=args.split, out=args.out,
                    multiscale=multiscale_from_args(args), labels=label_config_from_args(args),
                    label_source=args.labels, retries=args.retries, limit=args.limit)
    summary = run_local(job, resolve_device(args.device), progress=not args.quiet)
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0
