"""`weakseg pseudo`: attribution maps and pseudo-label PNGs for a dataset split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cli.box_pseudo_cmd import add_box_options, check_no_box_args, run_box
from cli.common import add_device, add_parser
from cli.method_args import add_method_options, method_from_args, multiscale_from_args
from weakseg.box_pseudo import BOX_METHODS
from weakseg.device import resolve_device, set_threads
from weakseg.errors import WeaksegError

if TYPE_CHECKING:
    from batch.image_job import ImageJob


def add_label_options(p: argparse.ArgumentParser) -> None:
    """--fg-thresh/--bg-thresh/--crf: how maps become label PNGs."""
    p.add_argument(
        "--fg-thresh", type=float, default=0.30, help="foreground where the best class map exceeds this (IRN: 0.30)"
    )
    p.add_argument(
        "--bg-thresh",
        type=float,
        default=0.05,
        help="background where every class map is below this (IRN: 0.05); 255 in between",
    )
    p.add_argument(
        "--crf", action="store_true", help="refine the foreground and background seeds with the dense CRF (IRN's rule)"
    )


def label_config_from_args(args: argparse.Namespace):
    """LabelConfig from --fg-thresh/--bg-thresh/--crf."""
    from weakseg.pseudo import LabelConfig
    from weakseg.refine.crf import CRFConfig

    if not 0 <= args.bg_thresh <= args.fg_thresh <= 1:
        raise WeaksegError(f"need 0 <= --bg-thresh <= --fg-thresh <= 1, got {args.bg_thresh} and {args.fg_thresh}")
    return LabelConfig(fg_thresh=args.fg_thresh, bg_thresh=args.bg_thresh, crf=CRFConfig() if args.crf else None)


def add_execution_options(p: argparse.ArgumentParser, in_process_default: bool = False) -> None:
    """--workers/--threads-per-worker/--gpus-per-worker/--address: how the job runs (never part of the manifest);
    `in_process_default`: --workers defaults to 0 (this process) instead of a Ray pool."""
    g = p.add_argument_group("execution (Ray)")
    g.add_argument(
        "--workers",
        type=int,
        default=0 if in_process_default else None,
        help="Ray workers, each holding the model (unset: one per GPU, else CPUs // threads-per-worker); "
        "0 runs in this process without Ray",
    )
    g.add_argument(
        "--threads-per-worker",
        "--threads",
        dest="threads_per_worker",
        type=int,
        default=None,
        help="torch CPU threads per worker, also its Ray CPU request (default 1 on Ray; torch's choice with --workers 0)",
    )
    g.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per worker, fractions share a GPU (default: 1 with --device cuda, or auto when GPUs exist; else 0)",
    )
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster to run on (ray://host:10001, host:6379 or auto); default RAY_ADDRESS, else a local "
        "Ray started in-process ('local' forces that)",
    )
    g.add_argument("--object-store-mb", type=int, default=512, help="object store size of a local Ray instance")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `pseudo`."""
    p = add_parser(
        sub,
        "pseudo",
        "generate attribution maps (maps/<id>.npz) and pseudo labels (labels/<id>.png) for a split",
        description="Generate attribution maps and pseudo labels for a split, on a local Ray started "
        "in-process (default), an existing Ray cluster (--address / RAY_ADDRESS) or in this "
        "process (--workers 0). Re-running skips finished images; prints a JSON summary; exit "
        "status 1 if any image failed (see <out>/failures.jsonl).",
    )
    p.add_argument(
        "--model",
        default=None,
        help="classifier run folder or .safetensors file (on a cluster: a shared path); the class-label methods "
        "need it (the box methods take --detector)",
    )
    p.add_argument("--data", required=True, help="VOC2012-layout dataset folder (on a cluster: a shared path)")
    p.add_argument("--split", default="train", help="split name or list file")
    p.add_argument(
        "--out",
        required=True,
        help="output folder or object-store URI (s3://bucket/prefix, gs://...); re-running skips finished "
        "images, a different configuration is refused",
    )
    p.add_argument("--labels", default="auto", help="image-level label source: xml, auto or a cls_labels.npy path")
    add_job_options(p, "only the first N images of the split")
    add_method_options(p, extra_methods=BOX_METHODS)
    add_label_options(p)
    add_refine_stage_options(p)
    add_box_options(p)  # after the class-label options, whose defaults it records (cli/box_pseudo_cmd.py)
    add_device(p)
    add_execution_options(p)
    p.set_defaults(func=run)


def add_job_options(p: argparse.ArgumentParser, limit_help: str) -> None:
    """--limit/--retries/--max-consecutive-failures/--quiet of a per-image batch job."""
    from batch.image_job import DEFAULT_MAX_CONSECUTIVE_FAILURES, DEFAULT_RETRIES

    p.add_argument("--limit", type=int, default=None, help=limit_help)
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="extra attempts for an image that fails or whose worker dies, before it is recorded in failures.jsonl",
    )
    p.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=DEFAULT_MAX_CONSECUTIVE_FAILURES,
        metavar="N",
        help="stop the job (exit status 2, naming the first error) after N failed images in a row; 0: never. "
        "Inputs (the model, --rib-data, --irn) are checked once before any image",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_refine_stage_options(p: argparse.ArgumentParser) -> None:
    """--refine irn|par, --irn and every refiner setting: a refiner run on the method's maps makes the PNGs."""
    from cli.refine_args import add_refiner_options
    from weakseg.refine.stage import REFINERS

    g = p.add_argument_group("refine stage")
    g.add_argument(
        "--refine",
        choices=REFINERS,
        default=None,
        help="run this refiner on each image's maps; its labels are the PNGs (the maps stay the method's) and its "
        "configuration is pinned in the manifest",
    )
    g.add_argument("--irn", default=None, metavar="RUN", help="IRN run folder or .safetensors for --refine irn")
    add_refiner_options(p)


def check_job_options(args: argparse.Namespace) -> None:
    """Refuse a negative --retries or --max-consecutive-failures."""
    if args.retries < 0:
        raise WeaksegError(f"--retries must be >= 0, got {args.retries}")
    if args.max_consecutive_failures < 0:
        raise WeaksegError(f"--max-consecutive-failures must be >= 0, got {args.max_consecutive_failures}")


def execute(job: ImageJob, args: argparse.Namespace) -> dict:
    """Run a per-image job in this process (--workers 0) or on Ray; its summary."""
    if args.workers == 0:
        if args.address or args.gpus_per_worker:
            raise WeaksegError("--workers 0 runs in this process: --address and --gpus-per-worker do not apply")
        from batch.image_job import run_local

        set_threads(args.threads_per_worker)
        return run_local(job, resolve_device(args.device), progress=not args.quiet)
    from batch.cluster import RayOptions
    from batch.ray_job import run_ray

    options = RayOptions(
        workers=args.workers,
        threads_per_worker=args.threads_per_worker or 1,
        gpus_per_worker=args.gpus_per_worker,
        address=args.address,
        object_store_mb=args.object_store_mb,
    )
    return run_ray(job, options, device=args.device, progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    """Run the pseudo-label job and print its summary JSON; exit 1 if any image failed."""
    if args.method in BOX_METHODS:
        return run_box(args)
    check_no_box_args(args)
    if args.model is None:
        raise WeaksegError(f"--method {args.method} needs --model (a classifier run folder or .safetensors)")
    from batch.pseudo_job import PseudoJob
    from batch.store import is_object_store_uri
    from cli.refine_args import check_unused_settings, refine_spec_from_args

    check_job_options(args)
    check_unused_settings(args, args.refine)
    if args.irn and args.refine != "irn":
        raise WeaksegError("--irn applies to --refine irn only")
    if args.refine and args.crf:
        raise WeaksegError(f"--crf refines the threshold labels, which --refine {args.refine} replaces: pass one")
    refine = refine_spec_from_args(args, args.refine, args.irn) if args.refine else None
    for flag, value in (("--data", args.data), ("--model", args.model)):
        if is_object_store_uri(value):
            raise WeaksegError(
                f"{flag} {value}: must be a filesystem path (on a cluster a shared mount, e.g. the bucket "
                "through s3fs/gcsfuse); only --out may be an object-store URI"
            )
    try:
        method = method_from_args(args)
    except ValueError as e:
        raise WeaksegError(str(e)) from e
    job = PseudoJob(
        method=method,
        model=Path(args.model),
        data=Path(args.data),
        split=args.split,
        out=args.out,
        multiscale=multiscale_from_args(args),
        labels=label_config_from_args(args),
        label_source=args.labels,
        retries=args.retries,
        limit=args.limit,
        max_consecutive_failures=args.max_consecutive_failures,
        refine=refine,
    )
    summary = execute(job, args)
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0
