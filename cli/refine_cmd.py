"""`weakseg refine irn|par`: a refiner over an existing pseudo-label folder, written as a new one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import add_device, add_parser
from cli.pseudo_cmd import add_execution_options, add_job_options, check_job_options, execute
from cli.refine_args import add_refiner_options, refine_spec_from_args
from weakseg.errors import WeaksegError

DESCRIPTIONS = {
    "irn": "IRN's random walk (sparse, 2^exp_times steps over the boundary map of a `weakseg train irn` run) on "
    "the stride-4 maps, x4 upsampled, a background plane at --irn-bg-thresh, argmax",
    "par": "PAR (training-free: RGB + position affinity at several dilations, iterated) on [background plane at "
    "--par-bg-score, max-normalised maps], argmax",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add `refine` with `irn` and `par`."""
    rf = add_parser(sub, "refine", "refine a pseudo-label folder's maps into pseudo masks (IRN or PAR)")
    rsub = rf.add_subparsers(dest="refiner", metavar="REFINER")
    rsub.required = True
    for name in ("irn", "par"):
        p = add_parser(
            rsub,
            name,
            f"refine a pseudo-label folder with {name.upper()}",
            description=f"{DESCRIPTIONS[name]}. Reads a folder `weakseg pseudo` (or `weakseg refine`) wrote; writes "
            "one in the same format: maps/<id>.npz copied from it (the method's maps, which `weakseg eval seeds` "
            "scores), labels/<id>.png the refined labels (`weakseg eval labels`), manifest.json pinning the "
            "source's manifest and the refiner's configuration. Re-running skips finished images; a different "
            "configuration is refused; prints a JSON summary; exit status 1 if any image failed (see "
            "<out>/failures.jsonl). Runs in this process unless --workers N asks for Ray workers.",
        )
        p.add_argument("--maps", required=True, help="pseudo-label folder to refine (with its manifest.json)")
        p.add_argument("--out", required=True, help="output folder or object-store URI (s3://bucket/prefix, ...)")
        p.add_argument(
            "--data", type=Path, default=None, help="VOC2012-layout dataset folder [default: the maps' manifest's]"
        )
        if name == "irn":
            p.add_argument("--irn", required=True, metavar="RUN", help="IRN run folder or .safetensors (train irn)")
        add_job_options(p, "only the first N images of the maps folder")
        add_refiner_options(p, (name,))
        add_device(p)
        add_execution_options(p, in_process_default=True)
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the refine job and print its summary JSON; exit 1 if any image failed."""
    from batch.refine_job import RefineJob
    from batch.store import is_object_store_uri

    check_job_options(args)
    if args.data is not None and is_object_store_uri(str(args.data)):
        raise WeaksegError(f"--data {args.data}: must be a filesystem path")
    job = RefineJob(
        maps=args.maps,
        out=args.out,
        refine=refine_spec_from_args(args, args.refiner, getattr(args, "irn", None)),
        data=args.data,
        retries=args.retries,
        limit=args.limit,
        max_consecutive_failures=args.max_consecutive_failures,
    )
    summary = execute(job, args)
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0
