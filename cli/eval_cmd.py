"""`weakseg eval seeds|labels`: quality of attribution maps and of label PNGs against ground truth.

Every evaluation prints its JSON on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import add_parser


def register(sub: argparse._SubParsersAction) -> None:
    """Add `eval` with `seeds` and `labels`."""
    ev = add_parser(sub, "eval", "evaluate maps or labels against ground-truth masks")
    esub = ev.add_subparsers(dest="target", metavar="TARGET")
    esub.required = True

    p = add_parser(
        esub, "seeds", "seed mIoU over a background-threshold sweep, precision/recall/F1, optional CRF, Markdown report"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="VOC2012-layout dataset folder with SegmentationClass masks [default: the folder's manifest's]",
    )
    p.add_argument(
        "--split",
        default=None,
        help="split name or list file (images without maps are skipped) [default: the manifest's, else train]",
    )
    p.add_argument("--maps", type=Path, required=True, help="pseudo-label output folder (or its maps/ folder)")
    p.add_argument(
        "--crf",
        action="store_true",
        help="also evaluate CRF-refined seeds (thresholds within --crf-window of the best)",
    )
    p.add_argument("--crf-window", type=float, default=0.1, help="CRF sweep half-width around the best plain threshold")
    p.add_argument("--report", type=Path, default=None, help="Markdown report path (default: <maps>/seed_report.md)")
    p.add_argument("--examples", type=int, default=6, help="images shown in the report's overlay figure")
    p.set_defaults(func=run_seeds)

    p = add_parser(esub, "labels", "score pseudo-label PNGs: mIoU over labelled pixels and the fraction left 255")
    p.add_argument(
        "--data", type=Path, default=None, help="VOC2012-layout dataset folder [default: the folder's manifest's]"
    )
    p.add_argument(
        "--split",
        default=None,
        help="split name or list file (images without labels are skipped) [default: the manifest's, else train]",
    )
    p.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="pseudo-label output folder (or its labels/ folder; `weakseg pseudo` or `weakseg refine`)",
    )
    p.set_defaults(func=run_labels)

    from cli.segmenter_cmd import register_eval  # the segmenter's train/eval parsers live in cli/segmenter_cmd.py

    register_eval(esub)

    from cli.detector_cmd import register_eval as register_detector_eval  # eval detector: cli/detector_cmd.py

    register_detector_eval(esub)

    from cli.instance_cmd import register_eval as register_instance_eval  # eval instance: cli/instance_cmd.py

    register_instance_eval(esub)


def folder_dataset(folder: Path, data: Path | None, split: str | None):
    """The dataset a label folder is scored against: --data and --split, else what its manifest.json records."""
    import json

    from weakseg.data.voc import VOCDataset
    from weakseg.errors import DataError

    root = folder.parent if folder.name in ("maps", "labels") and not (folder / "manifest.json").is_file() else folder
    manifest: dict = {}
    if (data is None or split is None) and (root / "manifest.json").is_file():
        try:
            manifest = json.loads((root / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{root / 'manifest.json'}: unreadable ({e}); pass --data and --split") from e
    data = data if data is not None else (Path(manifest["data"]) if manifest.get("data") else None)
    if data is None:
        raise DataError(f"{folder}: no manifest.json naming the dataset; pass --data")
    return VOCDataset(data, split or manifest.get("split") or "train")


def run_seeds(args: argparse.Namespace) -> int:
    """Evaluate seeds, write the report, print the JSON."""
    from weakseg.refine.crf import CRFConfig
    from weakseg.report.seed_eval import evaluate_seed_folder, write_seed_report

    dataset = folder_dataset(args.maps, args.data, args.split)
    crf = CRFConfig() if args.crf else None
    evaluation = evaluate_seed_folder(dataset, args.maps, crf, args.crf_window)
    report = args.report or Path(args.maps) / "seed_report.md"
    write_seed_report(report, dataset, args.maps, evaluation, f"Seed evaluation: {args.maps}", args.examples, crf)
    print(f"report: {report}")
    print(json.dumps(evaluation.to_json()))
    return 0


def run_labels(args: argparse.Namespace) -> int:
    """Score label PNGs and print the JSON."""
    from weakseg.errors import DataError
    from weakseg.metrics.seeds import evaluate_labels

    dataset = folder_dataset(args.labels, args.data, args.split)
    folder = args.labels / "labels" if (args.labels / "labels").is_dir() else args.labels
    ids = [i for i in dataset.ids if (folder / f"{i}.png").exists()]
    if not ids:
        raise DataError(f"{folder}: no label PNGs for any image of split {dataset.split_path.stem!r}")
    pairs = ((dataset.require_mask(i), folder / f"{i}.png") for i in ids)
    print(json.dumps(evaluate_labels(pairs, dataset.classes).to_json()))
    return 0
