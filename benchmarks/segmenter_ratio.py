"""Weak/full ratio: val mIoU of a segmenter trained on each pseudo-label set against one trained on the true masks,
each with the label cost it took (dissertation Table 2.1) and the sentence "X% of full supervision at Y% of its label cost".

    python benchmarks/segmenter_ratio.py --data BENCH/VOC2012 --out OUT \
        [--pseudo-root PSEUDO]            # every subfolder with a manifest.json, e.g. cam_crf advcam_crf rib_crf
        [--labels NAME=FOLDER ...]        # or name pseudo-label folders one by one
        [--epochs 30] [--arch lraspp_mobilenet_v3_large] [--pretrained efficientnet-lite0 --head-lr-mult 10]
        [--split train] [--device auto] [--ood-reviewed NAME=N ...]

Resumable: each segmenter trains in OUT/runs/<name> (the shared engine resumes an interrupted run) and each
evaluation is cached in OUT/results/<name>.json against its checkpoint's checksum and settings, so re-running
only does what is missing. The table goes to OUT/segmenter_ratio.md and OUT/segmenter_ratio.json.

The figure is the synthetic benchmark's (segmenters from scratch, or from --pretrained ImageNet weights with
--arch lraspp_efficientnet_lite0): its own figure, NOT a reproduction of the dissertation's 89% / 96%
(IRN-refined masks and an ImageNet-pretrained DeepLab-v2-ResNet-101 on PASCAL VOC 2012).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training.segmenter import SegmenterJob, train_segmenter
from weakseg.data.segmentation import infer_supervision
from weakseg.data.voc import VOCDataset
from weakseg.device import resolve_device, set_threads
from weakseg.engine import TrainConfig
from weakseg.io import atomic_write_json, atomic_write_text
from weakseg.label_cost import SECONDS_PER_IMAGE, SupervisionRatio
from weakseg.models.checkpoint import file_sha256, read_metadata
from weakseg.models.segmenter import ARCHS, DEFAULT_ARCH
from weakseg.models.segmenter_eval import evaluate_segmenter
from weakseg.models.segmenter_infer import InferenceConfig
from weakseg.models.segmenter_io import load_segmenter
from weakseg.refine.crf import CRFConfig

NOTE = ("Synthetic benchmark, {init}: this ratio is its own figure, not a reproduction of the "
        "dissertation's 89% (class labels) / 96% (boxes), which rest on IRN-refined masks and an ImageNet-pretrained "
        "DeepLab-v2-ResNet-101 on PASCAL VOC 2012. Label costs: Table 2.1 (class 20 s, box 38.1 s, full mask 239.7 s "
        "per image; a hard-OoD image checked counts at the class-tag cost).")


def label_sets(args: argparse.Namespace) -> dict[str, str]:
    """name -> labels ('gt' for the fully supervised baseline, else a pseudo-label folder), baseline first."""
    sets = {"full": "gt"}
    if args.pseudo_root is not None:
        for folder in sorted(p for p in args.pseudo_root.iterdir() if (p / "manifest.json").is_file()):
            sets[folder.name] = str(folder)
    for entry in args.labels:
        name, sep, folder = entry.partition("=")
        if not sep or not name or name == "full":
            raise SystemExit(f"--labels expects NAME=FOLDER with NAME other than 'full', got {entry!r}")
        sets[name] = folder
    return sets


def evaluate_cached(name: str, run: Path, args: argparse.Namespace, device: torch.device) -> dict:
    """The evaluation of one run, from OUT/results/<name>.json when checksum and settings match."""
    settings = {"split": args.eval_split, "multiscale": args.multiscale, "crf": args.crf, "limit": args.eval_limit}
    sha = file_sha256(run)
    cache = args.out / "results" / f"{name}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("checkpoint_sha256") == sha and cached.get("settings") == settings:
            return cached
    cfg = InferenceConfig.multiscale(CRFConfig() if args.crf else None) if args.multiscale else \
        InferenceConfig(crf=CRFConfig() if args.crf else None)
    model, _ = load_segmenter(run, device)
    evaluation = evaluate_segmenter(model, VOCDataset(args.data, args.eval_split), device, cfg, limit=args.eval_limit,
                                    progress=True).to_json()
    extra = read_metadata(run)["extra"]
    result = {"name": name, "checkpoint_sha256": sha, "settings": settings, "eval": evaluation,
              "supervision": extra.get("supervision"), "train_images": extra.get("train_images"),
              "labels_method": extra.get("labels_method")}
    atomic_write_json(cache, result)
    return result


def main() -> None:
    """Train (or resume) every label set, evaluate (cached), write and print the ratio table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="benchmark VOC2012 folder")
    p.add_argument("--out", type=Path, required=True, help="runs, cached results and the table")
    p.add_argument("--pseudo-root", type=Path, default=None, help="folder whose subfolders are pseudo-label outputs")
    p.add_argument("--labels", nargs="*", default=[], help="NAME=FOLDER pseudo-label sets")
    p.add_argument("--ood-reviewed", nargs="*", default=[], help="NAME=N hard-OoD images a person checked for that set")
    p.add_argument("--epochs", type=int, default=30, help="segmenter epochs (same recipe for every set)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=sorted(ARCHS))
    p.add_argument("--pretrained", default=None,
                   help="backbone init of every segmenter (e.g. efficientnet-lite0 with --arch lraspp_efficientnet_lite0)")
    p.add_argument("--head-lr-mult", type=float, default=1.0, help="lr multiplier of the segmentation head")
    p.add_argument("--split", default="train", help="training split of every segmenter")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-split", default="val")
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--multiscale", action="store_true")
    p.add_argument("--crf", action="store_true", help="CRF at inference (the pseudo labels' own CRF is their business)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    set_threads(args.threads)
    device = resolve_device(args.device)
    reviewed = {k: int(v) for k, _, v in (e.partition("=") for e in args.ood_reviewed)}
    results = {}
    for name, labels in label_sets(args).items():
        run = args.out / "runs" / name
        print(f"== {name}: training on {labels}", flush=True)
        job = SegmenterJob(data=args.data, labels=labels, out=run, split=args.split, crop=args.crop, arch=args.arch,
                           val_split=None, pretrained=args.pretrained,
                           train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                             head_lr_mult=args.head_lr_mult))
        train_segmenter(job, device)
        results[name] = evaluate_cached(name, run, args, device)

    full = results["full"]["eval"]["miou"]
    rows = []
    for name, r in results.items():
        supervision = r["supervision"] or infer_supervision(label_sets(args)[name])
        row = {"labels": name, "supervision": supervision, "train images": r["train_images"],
               "val mIoU": r["eval"]["miou"], "pixel acc": r["eval"]["pixel_acc"]}
        if name != "full" and full:
            ratio = SupervisionRatio(r["eval"]["miou"], full, supervision, int(r["train_images"]), reviewed.get(name, 0))
            row.update({"weak/full": ratio.performance, "label cost": ratio.cost, "statement": ratio.sentence()})
        else:
            row.update({"weak/full": 1.0, "label cost": 1.0, "statement": "the fully supervised reference"})
        rows.append(row)

    header = ["labels", "supervision", "train images", "val mIoU", "pixel acc", "weak/full", "label cost", "statement"]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(r.get(h, "")) for h in header) + " |" for r in rows]
    table = "\n".join(lines)
    costs = ", ".join(f"{k} {v} s" for k, v in SECONDS_PER_IMAGE.items())
    note = NOTE.format(init=f"segmenters initialised from {args.pretrained}" if args.pretrained
                       else "networks trained from scratch")
    text = (f"# Segmenter trained on pseudo labels vs true masks\n\n{table}\n\n{note}\n\n"
            f"Settings: {args.arch}{' from ' + args.pretrained if args.pretrained else ''}, {args.epochs} epochs, crop {args.crop}, eval split {args.eval_split}"
            f"{', multi-scale' if args.multiscale else ''}{', CRF' if args.crf else ''}. Costs per image: {costs}.\n")
    atomic_write_text(args.out / "segmenter_ratio.md", text)
    settings = {"arch": args.arch, "pretrained": args.pretrained, "head_lr_mult": args.head_lr_mult,
                "split": args.split, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "crop": args.crop,
                "seed": args.seed, "eval_split": args.eval_split, "multiscale": args.multiscale, "crf": args.crf,
                "eval_limit": args.eval_limit}
    atomic_write_json(args.out / "segmenter_ratio.json", {"rows": rows, "settings": settings,
                                                         "seconds_per_image": SECONDS_PER_IMAGE, "note": note})
    print(table)
    print(note)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
