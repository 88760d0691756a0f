"""`weakseg pseudo --method bbam|box|grabcut`: box pseudo labels from a split's VOC XML boxes (`batch.box_job`).

`cli.pseudo_cmd` registers the flags (`add_box_options`) and hands a box method to `run_box`; the executor (in this
process or on Ray) is the pseudo-label job's (`cli.pseudo_cmd.execute`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from cli.method_args import _flag, add_field_options, fields_from_args
from weakseg.errors import WeaksegError

CLASS_LABEL_OPTIONS = ("model", "refine", "irn", "crf", "labels", "no_flip", "scales", "fg_thresh", "bg_thresh")


def add_box_options(p: argparse.ArgumentParser) -> None:
    """--detector, --difficult, --skip-bad and every setting of BBAM (--bbam-*), its masks (--mask-*) and GrabCut;
    call it after the class-label options (CLASS_LABEL_OPTIONS), whose defaults it records."""
    from weakseg.attribution.bbam import BBAM
    from weakseg.box_pseudo import GrabCut
    from weakseg.data.box_labels import DIFFICULT_IGNORE, DIFFICULT_POLICIES
    from weakseg.refine.box_masks import BoxMaskConfig

    g = p.add_argument_group("box methods (--method bbam|box|grabcut: boxes from Annotations/<id>.xml)")
    g.add_argument(
        "--detector",
        default=None,
        metavar="RUN",
        help="detector run folder or .safetensors (`weakseg train detector`): BBAM explains it; the baselines "
        "only take its classes; its sha256 is pinned in the manifest",
    )
    g.add_argument(
        "--difficult",
        choices=DIFFICULT_POLICIES,
        default=DIFFICULT_IGNORE,
        help="difficult boxes: ignore (not explained; their pixels no instance claims are 255) or include them",
    )
    g.add_argument(
        "--skip-bad",
        action="store_true",
        help="an image with unusable boxes (outside the image, degenerate, a class not in the detector, none) is "
        "recorded in failures.jsonl and the job goes on; without it the job stops at the first (exit status 2)",
    )
    add_field_options(p.add_argument_group("bbam hyper-parameters"), "bbam", BBAM)
    add_field_options(p.add_argument_group("bbam pseudo masks (map -> CRF -> masks)"), "mask", BoxMaskConfig, True)
    add_field_options(p.add_argument_group("grabcut baseline"), "grabcut", GrabCut)
    # the class-label options (added before this) that a box method refuses when they are given
    p.set_defaults(class_label_defaults={dest: p.get_default(dest) for dest in CLASS_LABEL_OPTIONS})


def changed_flags(args: argparse.Namespace, prefix: str, cls: type) -> list[str]:
    """The --PREFIX-FIELD flags given a value other than the field's default."""
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or not hasattr(args, f"{prefix}__{f.name}"):
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if getattr(args, f"{prefix}__{f.name}") != default:
            out.append(_flag(prefix, f.name))
    return out


def check_box_args(args: argparse.Namespace) -> None:
    """Refuse the class-label options, and the settings of a box method that does not run."""
    from cli.refine_args import check_unused_settings
    from weakseg.attribution import METHODS
    from weakseg.attribution.bbam import BBAM
    from weakseg.box_pseudo import GrabCut
    from weakseg.refine.box_masks import BoxMaskConfig

    defaults = args.class_label_defaults
    given = [f"--{dest.replace('_', '-')}" for dest, default in defaults.items() if getattr(args, dest) != default]
    given += [flag for name, cls in METHODS.items() for flag in changed_flags(args, name, cls)]
    if args.method != "bbam":
        given += changed_flags(args, "bbam", BBAM) + changed_flags(args, "mask", BoxMaskConfig)
    if args.method != "grabcut":
        given += changed_flags(args, "grabcut", GrabCut)
    if given:
        raise WeaksegError(f"--method {args.method} takes its boxes from the XML: {', '.join(given)} do not apply")
    check_unused_settings(args, None)


def box_method_from_args(args: argparse.Namespace):
    """The box method of --method with its settings; WeaksegError when one is invalid."""
    from weakseg.attribution.bbam import BBAM
    from weakseg.box_pseudo import FilledBox, GrabCut

    try:
        if args.method == "bbam":
            return BBAM(**fields_from_args(args, "bbam"))
        if args.method == "grabcut":
            return GrabCut(**fields_from_args(args, "grabcut"))
        return FilledBox()
    except ValueError as e:
        raise WeaksegError(f"--method {args.method}: {e}") from e


def run_box(args: argparse.Namespace) -> int:
    """Run the box pseudo-label job, write instances_coco.json and print the summary JSON; exit 1 if an image
    failed (images left out by --skip-bad are counted under "bad", not as failures)."""
    from batch.box_job import BoxPseudoJob, write_coco
    from cli.pseudo_cmd import check_job_options, execute
    from weakseg.refine.box_masks import BoxMaskConfig

    check_job_options(args)
    check_box_args(args)
    if args.method == "bbam" and not args.detector:
        raise WeaksegError("--method bbam explains a detector: pass --detector RUN")
    try:
        masks = BoxMaskConfig(**fields_from_args(args, "mask"))
    except ValueError as e:
        raise WeaksegError(f"--mask-*: {e}") from e
    job = BoxPseudoJob(
        method=box_method_from_args(args),
        data=Path(args.data),
        split=args.split,
        out=args.out,
        detector=Path(args.detector) if args.detector else None,
        masks=masks,
        difficult=args.difficult,
        skip_bad=args.skip_bad,
        retries=args.retries,
        limit=args.limit,
        max_consecutive_failures=args.max_consecutive_failures,
    )
    summary = execute(job, args)
    summary["instances_coco"] = write_coco(job)
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0


def check_no_box_args(args: argparse.Namespace) -> None:
    """Refuse the box methods' options with a class-label method."""
    from weakseg.attribution.bbam import BBAM
    from weakseg.box_pseudo import GrabCut
    from weakseg.data.box_labels import DIFFICULT_IGNORE
    from weakseg.refine.box_masks import BoxMaskConfig

    given = ["--detector"] if args.detector else []
    given += ["--skip-bad"] if args.skip_bad else []
    given += ["--difficult"] if args.difficult != DIFFICULT_IGNORE else []
    given += changed_flags(args, "bbam", BBAM) + changed_flags(args, "mask", BoxMaskConfig)
    given += changed_flags(args, "grabcut", GrabCut)
    if given:
        raise WeaksegError(f"{', '.join(given)} apply to the box methods only (--method bbam|box|grabcut)")
