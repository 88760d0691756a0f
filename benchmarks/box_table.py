"""Table 5.1 style, box supervision: box pseudo masks (filled box, GrabCut, BBAM with the box head, the class head or
both) scored against the true instance masks, and optionally (--train) Mask R-CNN trained on each of them and on
the true masks, with the weak/full ratio and the label cost (dissertation Table 2.1: boxes 38.1 s per image, full
masks 239.7 s).

    python benchmarks/box_table.py --data BENCH/VOC2012 \
        [--pseudo box=P/box grabcut=P/grabcut bbam-box=P/bbam_box bbam-cls=P/bbam_cls bbam=P/bbam]  \
        [--train] [--epochs 12] [--arch mobilenet_v3] [--device auto] [--out benchmarks/results/box_table.json] \
        [--figure docs/images/box_masks.png --figure-images 6]

The pseudo-label folders are `weakseg pseudo --method box|grabcut|bbam ...` outputs (instances/<id>.png + .json);
each is scored on the images of --train-split it labels (`weakseg eval instance --labels`: every pseudo instance a
prediction of score 1). With --train, Mask R-CNN (`weakseg train instance`, one recipe for every row) trains on each
folder and on the true masks (row `full`), and is scored on --val-split's true masks (`weakseg eval instance`).
Metrics (weakseg.metrics.mask_ap): mask AP at IoU 0.25 / 0.50 / 0.70 / 0.75 and COCO AP@[.5:.95] (pycocotools'
segm COCOeval, params.iouThrs = [0.25, 0.50, ..., 0.95] as exact literals), ABO (per true instance the best IoU with
a same-class prediction scored >= 0.5, averaged). weak/full: a row's Mask R-CNN metric over the `full` row's; label
cost: box seconds over full-mask seconds on the same images (weakseg.label_cost).

--figure writes a PNG: per image of --train-split (the first --figure-images), the image, its true instances and each
folder's instances drawn over it (one colour per instance, cream = ignored).

Resumable: each Mask R-CNN trains in --runs/<name> (the shared engine resumes an interrupted run; a finished one is
only reloaded) and every score is kept in --out with what it was computed from (the folder's manifest checksum and
file count, the checkpoint's checksum, the split and limits); a re-run recomputes only what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from training.instance import InstanceJob, train_instance  # noqa: E402
from weakseg.data.instances import GT, INSTANCES_DIR, check_label_folder, open_instance_split  # noqa: E402
from weakseg.data.voc import VOCDataset  # noqa: E402
from weakseg.device import resolve_device, set_threads  # noqa: E402
from weakseg.engine import TrainConfig  # noqa: E402
from weakseg.io import atomic_write_bytes, atomic_write_json, read_label_png  # noqa: E402
from weakseg.label_cost import SECONDS_PER_IMAGE, cost_fraction  # noqa: E402
from weakseg.models.checkpoint import file_sha256  # noqa: E402
from weakseg.models.detector import ARCHS, DEFAULT_ARCH  # noqa: E402
from weakseg.models.instance import load_instance_model  # noqa: E402
from weakseg.models.instance_eval import evaluate_instances, evaluate_label_folder  # noqa: E402
from weakseg.report.overlay import mask_overlay, tile  # noqa: E402

FULL = "full"
METRICS = ("ap25", "ap50", "ap70", "ap75", "coco_ap", "abo")
NOTE = (
    "Synthetic benchmark, networks trained from scratch unless --pretrained: its own figures, not a reproduction of "
    "the dissertation's Table 5.1 (PASCAL VOC 2012, ImageNet-pretrained ResNet Mask R-CNN; BBAM reaches 92.2 % of "
    "the fully supervised AP50 and 95.7 % of its ABO)."
)


def label_sets(entries: list[str]) -> dict[str, Path]:
    """NAME=DIR pseudo-label folders, in the order given."""
    sets: dict[str, Path] = {}
    for entry in entries:
        name, sep, folder = entry.partition("=")
        if not sep or not name or name == FULL or name in sets:
            raise SystemExit(f"--pseudo expects distinct NAME=DIR with NAME other than {FULL!r}, got {entry!r}")
        sets[name] = check_label_folder(folder)
    return sets


def folder_key(folder: Path, split: str, limit: int | None) -> dict[str, Any]:
    """What a pseudo folder's score depends on: its place, manifest checksum, instance file count, split, limit."""
    manifest = folder / "manifest.json"
    return {
        "labels": str(folder.resolve()),
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None,
        "instance_files": sum(1 for _ in (folder / INSTANCES_DIR).glob("*.png")),
        "split": split,
        "limit": limit,
    }


def pick(report: dict[str, Any]) -> dict[str, Any]:
    """The table's metrics and counts of an eval report."""
    keep = (*METRICS, "images", "instances", "predictions", "images_without_labels")
    return {k: report[k] for k in keep if k in report}


def cached(results: dict[str, Any], name: str, stage: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """A stage's stored score when it was computed from `key`."""
    entry = results.get(name, {}).get(stage)
    return entry if entry is not None and entry.get("key") == key else None


def store(out: Path, state: dict[str, Any], name: str, stage: str, entry: dict[str, Any]) -> None:
    """Keep a stage's score and write the results file (atomic)."""
    state["rows"].setdefault(name, {})[stage] = entry
    atomic_write_json(out, state)


def train_and_score(
    name: str, labels: str, args: argparse.Namespace, device: torch.device, state: dict[str, Any]
) -> dict[str, Any]:
    """Train (or resume, or reload) Mask R-CNN on `labels` and score it on the validation split (cached)."""
    run = args.runs / name
    job = InstanceJob(
        data=args.data,
        out=run,
        labels=labels,
        split=args.train_split,
        val_split=None,
        arch=args.arch,
        pretrained=args.pretrained,
        min_size=args.min_size,
        max_size=args.max_size,
        box_batch_size_per_image=args.box_batch_size_per_image,
        box_head_dim=args.box_head_dim,
        mask_head_dim=args.mask_head_dim,
        mask_head_layers=args.mask_head_layers,
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=1e-4,
            warmup_steps=args.warmup_steps,
            seed=args.seed,
        ),
    )
    started = time.time()
    fit = train_instance(job, device, progress=not args.quiet)
    history = json.loads((run / "run.json").read_text()).get("history", [])  # every epoch, across resumes
    trained = {
        "train_seconds": round(sum(epoch.get("seconds", 0.0) for epoch in history), 1),
        "resumed_from_epoch": fit.resumed_from_epoch,
    }
    key = {"checkpoint_sha256": file_sha256(run), "split": args.val_split, "limit": args.eval_limit}
    hit = cached(state["rows"], name, "mask_rcnn", key)
    if hit is not None:
        return hit
    model, _ = load_instance_model(run, device)
    truth = open_instance_split(args.data, args.val_split, GT, training=False)
    report = evaluate_instances(model, truth, device, limit=args.eval_limit, progress=not args.quiet)
    entry = {"key": key, "run": str(run), **trained, "seconds": round(time.time() - started, 1), **pick(report)}
    store(args.out, state, name, "mask_rcnn", entry)
    return entry


def score_folder(name: str, folder: Path, args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    """A pseudo folder's masks against the true ones on the training split (cached)."""
    key = folder_key(folder, args.train_split, args.eval_limit)
    hit = cached(state["rows"], name, "pseudo", key)
    if hit is not None:
        return hit
    truth = open_instance_split(args.data, args.train_split, GT, training=False)
    pseudo = open_instance_split(args.data, args.train_split, folder, training=False)
    report = evaluate_label_folder(truth, pseudo, limit=args.eval_limit, progress=not args.quiet)
    entry = {"key": key, **pick(report)}
    store(args.out, state, name, "pseudo", entry)
    return entry


def ratios(rows: dict[str, Any], images: int) -> None:
    """Each pseudo row's Mask R-CNN metrics over the full row's, with the label cost of boxes on `images` images."""
    full = rows.get(FULL, {}).get("mask_rcnn")
    for name, row in rows.items():
        supervision = "full" if name == FULL else "box"
        row["label_cost_ratio"] = cost_fraction(supervision, images)
        if full is None or "mask_rcnn" not in row:
            continue
        row["weak_over_full"] = {
            m: (row["mask_rcnn"][m] / full[m] if full.get(m) and row["mask_rcnn"].get(m) is not None else None)
            for m in METRICS
        }


def markdown(rows: dict[str, Any]) -> str:
    """The table: pseudo-mask and Mask R-CNN metrics, weak/full on AP50 and ABO, label cost."""
    cols = ["labels", *(f"pseudo {m}" for m in METRICS), *(f"Mask R-CNN {m}" for m in METRICS)]
    cols += ["AP50 weak/full", "ABO weak/full", "label cost"]

    def cell(value: Any) -> str:
        return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, row in rows.items():
        pseudo, trained, ratio = row.get("pseudo", {}), row.get("mask_rcnn", {}), row.get("weak_over_full", {})
        values = [name, *(pseudo.get(m) for m in METRICS), *(trained.get(m) for m in METRICS)]
        values += [ratio.get("ap50"), ratio.get("abo"), row.get("label_cost_ratio")]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)


def write_figure(path: Path, data: Path, split: str, sets: dict[str, Path], images: int) -> Path:
    """A PNG grid: per image of `split` (the first `images`), the image, its true instances and each set's."""
    dataset = VOCDataset(data, split)
    rows = []
    for image_id in dataset.ids[:images]:
        image = dataset.image(image_id)
        truth = dataset.instance_mask(image_id)
        if truth is None:
            raise SystemExit(f"{dataset.instance_mask_path(image_id)}: missing (the figure shows true instances)")
        masks = [read_label_png(folder / INSTANCES_DIR / f"{image_id}.png") for folder in sets.values()]
        rows.append([image, *(mask_overlay(image, m, alpha=0.6) for m in (truth, *masks))])
    png = tile(rows, captions=["image", "true instances", *sets])
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(png).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def main() -> None:
    """Score every folder, train and score Mask R-CNN (--train), write the JSON and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="benchmark VOC2012 folder (SegmentationObject + XML)")
    p.add_argument("--pseudo", nargs="*", default=[], help="NAME=DIR pseudo-label folders (instances/)")
    p.add_argument("--train", action="store_true", help="also train Mask R-CNN on each folder and on the true masks")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "box_table.json")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "box_table", help="Mask R-CNN run folders")
    p.add_argument("--train-split", default="train", help="split the pseudo labels cover and Mask R-CNN trains on")
    p.add_argument("--val-split", default="val", help="split Mask R-CNN is scored on")
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N images of a split")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=list(ARCHS))
    p.add_argument("--pretrained", default=None, help="EfficientNet-Lite ImageNet weights (Lite archs)")
    p.add_argument("--min-size", type=int, default=320)
    p.add_argument("--max-size", type=int, default=640)
    p.add_argument("--box-batch-size-per-image", type=int, default=128)
    p.add_argument("--box-head-dim", type=int, default=1024)
    p.add_argument("--mask-head-dim", type=int, default=256)
    p.add_argument("--mask-head-layers", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--figure", type=Path, default=None, help="also write a PNG of the pseudo instances (--figure-images)")
    p.add_argument("--figure-images", type=int, default=6, help="images of --train-split in the figure")
    args = p.parse_args()

    set_threads(args.threads)
    device = resolve_device(args.device)
    sets = label_sets(args.pseudo)
    if not sets and not args.train:
        raise SystemExit("nothing to do: give --pseudo folders and/or --train")
    if args.figure is not None:
        print(f"figure: {write_figure(args.figure, args.data, args.train_split, sets, args.figure_images)}")
    skip = ("quiet", "figure", "figure_images")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}
    state: dict[str, Any] = {"rows": {}}
    if args.out.is_file():
        state = json.loads(args.out.read_text())
        state.setdefault("rows", {})
    state.update({"command": " ".join(sys.argv), "settings": settings, "note": NOTE})
    state["seconds_per_image"] = SECONDS_PER_IMAGE
    state["device"] = str(device)

    for name, folder in sets.items():
        print(f"== {name}: pseudo masks of {folder}", flush=True)
        score_folder(name, folder, args, state)
    if args.train:
        for name, labels in ({FULL: GT} | {k: str(v) for k, v in sets.items()}).items():
            print(f"== {name}: Mask R-CNN on {labels}", flush=True)
            train_and_score(name, labels, args, device, state)
    wanted = ([FULL] if args.train else []) + list(sets)
    rows = {name: state["rows"][name] for name in wanted}
    images = len(open_instance_split(args.data, args.train_split, GT, training=True).ids)
    ratios(rows, images)
    state["table"] = {"rows": rows, "markdown": markdown(rows), "train_images": images}
    atomic_write_json(args.out, state)
    print(state["table"]["markdown"])
    print(NOTE)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
