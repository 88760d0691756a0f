"""`weakseg train segmenter` and `weakseg eval segmenter` (hooked into the `train` and `eval` parsers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import add_device, add_parser, add_threads
from weakseg.device import resolve_device, set_threads
from weakseg.label_cost import SECONDS_PER_IMAGE
from weakseg.models.segmenter import ARCHS, DEFAULT_ARCH

if TYPE_CHECKING:
    from weakseg.models.segmenter_infer import InferenceConfig


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """--multiscale, --crf and --max-side, shared by eval and predict."""
    p.add_argument(
        "--multiscale", action="store_true", help="average softmax over scales 0.5..1.5 and horizontal flips"
    )
    p.add_argument(
        "--crf", action="store_true", help="refine the class probabilities with the dense CRF (IRN parameters)"
    )
    p.add_argument(
        "--max-side", type=int, default=None, help="segment images whose longer side exceeds this at reduced size"
    )


def inference_config(args: argparse.Namespace) -> InferenceConfig:
    """The InferenceConfig the options ask for."""
    from weakseg.errors import WeaksegError
    from weakseg.models.segmenter_infer import InferenceConfig
    from weakseg.refine.crf import CRFConfig

    crf = CRFConfig() if args.crf else None
    try:
        if args.multiscale:
            return InferenceConfig.multiscale(crf=crf, max_side=args.max_side)
        return InferenceConfig(crf=crf, max_side=args.max_side)
    except ValueError as e:
        raise WeaksegError(str(e)) from e


def register_trainer(tsub: argparse._SubParsersAction) -> None:
    """Add `train segmenter` to the `train` parser's trainers."""
    from cli.train_cmd import add_train_options

    p = add_parser(
        tsub,
        "segmenter",
        "train a segmentation network on pseudo-label PNGs (255 ignored) or on true masks",
        description="Train LR-ASPP MobileNetV3 (default) or DeepLabV3-ResNet-50/101 with cross-entropy on "
        "labels/<id>.png pseudo labels, pixels labelled 255 ignored; '--labels gt' trains the "
        "fully supervised baseline on SegmentationClass masks with the same recipe. "
        "Re-running into the same --out resumes.",
    )
    add_train_options(p, epochs=30, batch_size=8, lr=2e-3)
    p.add_argument(
        "--labels", required=True, help="a pseudo-label folder (the pseudo job's output or its labels/) or 'gt'"
    )
    p.add_argument("--split", default="train", help="training split (images without a label PNG are left out)")
    p.add_argument("--val-split", default="val", help="split scored (mIoU on its masks) after each epoch ('' to skip)")
    p.add_argument("--val-images", type=int, default=None, help="score only the first N validation images each epoch")
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=sorted(ARCHS), help="network (DeepLabV3 is for GPUs)")
    p.add_argument("--crop", type=int, default=128, help="square training crop (after random scaling)")
    p.add_argument(
        "--scale-range", type=float, nargs=2, default=[0.7, 1.3], metavar=("MIN", "MAX"), help="random rescale range"
    )
    p.add_argument(
        "--pretrained",
        default=None,
        help="local backbone state-dict file (torchvision classification or segmentation weights), or for "
        "--arch lraspp_efficientnet_lite0/1/2 the installed ImageNet package (efficientnet-lite0); nothing is "
        "downloaded. The backbone's BatchNorm (and a Lite's stem) are then frozen",
    )
    p.add_argument("--head-lr-mult", type=float, default=1.0, help="learning-rate multiplier of the segmentation head")
    p.add_argument(
        "--supervision",
        default="auto",
        choices=["auto", *SECONDS_PER_IMAGE],
        help="label form consumed, for the label-cost statement (auto: full for gt, box for BBAM labels, else class)",
    )
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train a segmenter and print its final record as JSON."""
    from cli.train_cmd import print_fit_result, train_config_from_args
    from training.segmenter import SegmenterJob, train_segmenter

    set_threads(args.threads)
    device = resolve_device(args.device)
    job = SegmenterJob(
        data=args.data,
        labels=args.labels,
        out=args.out,
        split=args.split,
        val_split=args.val_split or None,
        val_images=args.val_images,
        arch=args.arch,
        crop=args.crop,
        scale_range=tuple(args.scale_range),
        pretrained=args.pretrained,
        supervision=args.supervision,
        train=train_config_from_args(args),
    )
    return print_fit_result(args.out, train_segmenter(job, device, progress=not args.quiet))


def register_eval(esub: argparse._SubParsersAction) -> None:
    """Add `eval segmenter` to the `eval` parser's targets."""
    p = add_parser(
        esub,
        "segmenter",
        "score a segmenter on a split's masks: mIoU, pixel accuracy, per-class IoU (JSON)",
        description="Prints {miou, pixel_acc, per_class, ...} as JSON on the last line. With --full-miou or "
        "--full-model it also states 'X% of full supervision at Y% of its label cost' "
        "(label costs from the dissertation's Table 2.1).",
    )
    p.add_argument("--model", type=Path, required=True, help="segmenter run folder or .safetensors file")
    p.add_argument(
        "--data", type=Path, required=True, help="VOC2012-layout dataset folder with SegmentationClass masks"
    )
    p.add_argument("--split", default="val", help="split name or list file (images without a mask are skipped)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    add_inference_options(p)
    ref = p.add_mutually_exclusive_group()
    ref.add_argument(
        "--full-miou", type=float, default=None, help="mIoU of the fully supervised equivalent, for the ratio"
    )
    ref.add_argument(
        "--full-model", type=Path, default=None, help="fully supervised segmenter run, evaluated the same way"
    )
    p.add_argument(
        "--ood-reviewed",
        type=int,
        default=0,
        help="hard-OoD candidate images a person checked (counted at class-tag cost)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate a segmenter; print the ratio sentence when a full-supervision reference is given, then the JSON."""
    from weakseg.data.voc import VOCDataset
    from weakseg.label_cost import SupervisionRatio
    from weakseg.models.checkpoint import read_metadata
    from weakseg.models.segmenter_eval import evaluate_segmenter
    from weakseg.models.segmenter_io import load_segmenter

    set_threads(args.threads)
    device = resolve_device(args.device)
    cfg = inference_config(args)
    dataset = VOCDataset(args.data, args.split)
    model, classes = load_segmenter(args.model, device)
    if classes != dataset.classes:
        from weakseg.errors import CheckpointError

        raise CheckpointError(f"{args.model}: trained for classes {classes} but {args.data} has {dataset.classes}")
    extra = read_metadata(args.model)["extra"]
    result = evaluate_segmenter(model, dataset, device, cfg, limit=args.limit, progress=not args.quiet).to_json()
    result.update(
        {
            "split": args.split,
            "multiscale": bool(args.multiscale),
            "crf": bool(args.crf),
            "supervision": extra.get("supervision"),
            "train_images": extra.get("train_images"),
        }
    )
    full = args.full_miou
    if args.full_model is not None:
        full_model, _ = load_segmenter(args.full_model, device)
        full = evaluate_segmenter(full_model, dataset, device, cfg, limit=args.limit, progress=not args.quiet).miou
    if full is not None and result["miou"] is not None and extra.get("supervision") not in (None, "full"):
        ratio = SupervisionRatio(
            result["miou"], full, extra["supervision"], int(extra.get("train_images") or 1), args.ood_reviewed
        )
        result["ratio"] = ratio.to_json()
        print(ratio.sentence())
    print(json.dumps(result))
    return 0
