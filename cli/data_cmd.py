"""`weakseg data`: fetch public datasets and check a VOC-layout dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import add_parser


def register(sub: argparse._SubParsersAction) -> None:
    """Add `data fetch` and `data check`."""
    data = add_parser(sub, "data", "download and check datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_sub.required = True

    from weakseg.data.fetch import DATASETS

    parts_help = "; ".join(f"{name}: {', '.join(s.part for s in specs)}" for name, specs in DATASETS.items())
    p = add_parser(
        data_sub,
        "fetch",
        "download, verify (SHA-256) and extract a public dataset",
        description="Download, verify (SHA-256) and safely extract a public dataset archive.\n"
        "Layouts: voc -> ROOT/VOCdevkit/VOC2012, sbd -> ROOT/SBD (plus train_aug.txt in "
        "VOC2012 when present), coco -> ROOT/coco/{train2017,val2017,annotations}.",
    )
    p.add_argument("dataset", choices=sorted(DATASETS), help="which dataset to fetch")
    p.add_argument("--root", type=Path, required=True, help="destination folder (created if missing)")
    p.add_argument(
        "--url",
        action="append",
        default=None,
        help="download from this URL (a mirror or a file:// path) instead of the official host; "
        "once per selected part, in order",
    )
    p.add_argument(
        "--sha256",
        action="append",
        default=None,
        help="expected SHA-256 of the archive from --url; without it the official archive's "
        "checksum is required; once per selected part, in order",
    )
    p.add_argument("--parts", default=None, help=f"comma-separated subset of archives to fetch ({parts_help})")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive in ROOT after extraction")
    p.add_argument("--force", action="store_true", help="fetch again even if the layout is already present")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_fetch)

    c = add_parser(
        data_sub, "check", "validate a VOC-layout split: images decode, XML, labels and masks are consistent"
    )
    c.add_argument("--data", type=Path, required=True, help="VOC2012-layout dataset folder")
    c.add_argument("--split", default="train", help="split name (ImageSets/Segmentation/<split>.txt) or list file")
    c.add_argument("--labels", default="auto", help="image-level label source: xml, auto or a cls_labels.npy path")
    c.add_argument("--no-decode", action="store_true", help="read image headers only (faster, misses truncated files)")
    c.set_defaults(func=run_check)


def run_fetch(args: argparse.Namespace) -> None:
    """Fetch the dataset and print where it was installed."""
    from weakseg.data.fetch import fetch_dataset

    parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
    where = fetch_dataset(
        args.dataset,
        args.root,
        urls=args.url,
        sha256s=args.sha256,
        parts=parts,
        keep_archive=args.keep_archive,
        progress=not args.quiet,
        force=args.force,
    )
    print(where)


def run_check(args: argparse.Namespace) -> int:
    """Check every image of the split, print a JSON summary, exit 1 if any is bad."""
    from weakseg.data.voc import VOCDataset

    dataset = VOCDataset(args.data, args.split, labels=args.labels, skip_bad=True)
    good = dataset.validate(decode=not args.no_decode)
    print(
        json.dumps(
            {
                "split": str(dataset.split_path),
                "images": len(dataset.ids),
                "good": len(good),
                "bad": [{"id": i, "error": e} for i, e in dataset.bad],
            },
            indent=2,
        )
    )
    return 1 if dataset.bad else 0
