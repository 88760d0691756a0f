"""`weakseg train instance` and `weakseg eval instance` (hooked into the `train` and `eval` parsers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import add_device, add_parser, add_threads
from weakseg.device import resolve_device, set_threads
from weakseg.models.instance import MASK_HEAD_DIM, MASK_HEAD_LAYERS

AP_HELP = (
    "Mask AP from pycocotools' segm COCOeval with params.iouThrs set to [0.25, 0.50, 0.55, ..., 0.95] (each its "
    "decimal literal; pycocotools' default has no 0.25), so AP25 and AP70 are computed in the same run at thresholds "
    "exactly 0.25 and 0.70: a mask matches at t when IoU >= t. COCO AP is the mean over 0.50..0.95 (the standard). "
    "Void (255) pixels of the true instance PNG count in no IoU; difficult objects are crowd (ignored). ABO: for "
    "every non-difficult true instance the highest IoU with a predicted mask of its class scored >= --abo-score "
    "(0 if none), averaged over all true instances."
)


def register_trainer(tsub: argparse._SubParsersAction) -> None:
    """Add `train instance` to the `train` parser's trainers."""
    from cli.detector_cmd import add_rcnn_options
    from cli.train_cmd import add_train_options

    p = add_parser(
        tsub,
        "instance",
        "train a Mask R-CNN on true (--labels gt) or pseudo instance masks (--labels DIR), ignore regions respected",
        description="Train torchvision's Mask R-CNN on the detector's backbones (MobileNetV3-Large-FPN default, "
        "ResNet-50-FPN, EfficientNet-Lite0/1/2 FPN from scratch or --pretrained efficientnet-lite0; nothing is "
        "downloaded). --labels gt: SegmentationObject/<id>.png with the XML objects (value k = the k-th <object>); "
        "--labels DIR: a pseudo-label folder with instances/<id>.png (0 background, 1..N, 255 ignore) and "
        "instances/<id>.json (each instance's class and box), as `weakseg pseudo --method box|grabcut|bbam` writes. "
        "Pixels marked 255 (and difficult objects' pixels) count in no mask loss. Horizontal flips. Re-running "
        "into the same --out resumes.",
    )
    add_train_options(p, epochs=12, batch_size=4, lr=1e-4)
    p.add_argument("--labels", required=True, help="'gt' (true instance masks) or a pseudo-label folder")
    p.add_argument("--split", default="train", help="training split: ImageSets/Segmentation/<split>.txt or a path")
    p.add_argument(
        "--val-split", default="val", help="split scored (mask AP50 on the true masks) after each epoch ('' to skip)"
    )
    add_rcnn_options(p)
    p.add_argument(
        "--mask-head-dim", type=int, default=MASK_HEAD_DIM, help="channels of the mask head (torchvision's 256)"
    )
    p.add_argument(
        "--mask-head-layers", type=int, default=MASK_HEAD_LAYERS, help="3x3 convolutions of the mask head (4)"
    )
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train a Mask R-CNN and print its final record as JSON."""
    from cli.detector_cmd import rcnn_job_fields
    from cli.train_cmd import print_fit_result
    from training.instance import InstanceJob, train_instance

    set_threads(args.threads)
    device = resolve_device(args.device)
    job = InstanceJob(
        **rcnn_job_fields(args),
        labels=args.labels,
        mask_head_dim=args.mask_head_dim,
        mask_head_layers=args.mask_head_layers,
    )
    return print_fit_result(args.out, train_instance(job, device, progress=not args.quiet))


def register_eval(esub: argparse._SubParsersAction) -> None:
    """Add `eval instance` to the `eval` parser's targets."""
    from weakseg.metrics.mask_ap import ABO_SCORE
    from weakseg.models.instance_eval import MASK_THRESHOLD

    p = add_parser(
        esub,
        "instance",
        "mask AP25/50/70/75, COCO AP and ABO of a Mask R-CNN (--model) or a pseudo-label folder (--labels) (JSON)",
        description="Scores instance masks against the true ones (SegmentationObject/<id>.png + XML classes): "
        "a Mask R-CNN's predictions on --split (default val), or the instances of a pseudo-label folder, each a "
        "prediction of score 1, on the folder's images of --split (default: the manifest's split, else train). "
        + AP_HELP
        + " Prints the JSON on the last line.",
    )
    p.add_argument("--model", type=Path, default=None, help="Mask R-CNN run folder or .safetensors file")
    p.add_argument(
        "--labels", type=Path, default=None, help="pseudo-label folder with instances/<id>.png and .json (or --model)"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="VOC2012-layout dataset folder with SegmentationObject/ [--labels: default the manifest's]",
    )
    p.add_argument("--split", default=None, help="split name or list file [default: val; --labels: see above]")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument(
        "--mask-threshold", type=float, default=MASK_THRESHOLD, help="a predicted mask is its probability > this"
    )
    p.add_argument("--abo-score", type=float, default=ABO_SCORE, help="ABO considers predictions scored at least this")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Score a Mask R-CNN or a pseudo-label folder and print the JSON."""
    from weakseg.data.instances import GT, check_label_folder, label_manifest, open_instance_split
    from weakseg.errors import WeaksegError
    from weakseg.models.detector import check_classes
    from weakseg.models.instance import load_instance_model
    from weakseg.models.instance_eval import evaluate_instances, evaluate_label_folder

    set_threads(args.threads)
    if (args.model is None) == (args.labels is None):
        raise WeaksegError("eval instance scores either a Mask R-CNN (--model RUN) or a label folder (--labels DIR)")
    if args.labels is not None:
        folder = check_label_folder(args.labels)
        manifest = label_manifest(folder)
        split = args.split or manifest.get("split") or "train"
        data = args.data or (Path(manifest["data"]) if manifest.get("data") else None)
        if data is None:
            raise WeaksegError(f"{folder}: its manifest.json names no dataset; pass --data")
        truth = open_instance_split(data, split, GT, training=False)
        pseudo = open_instance_split(data, split, folder, training=False)
        report = evaluate_label_folder(truth, pseudo, limit=args.limit, progress=not args.quiet)
        print(json.dumps({"split": str(split), **report}))
        return 0
    if args.data is None:
        raise WeaksegError("--model needs --data (the dataset with the true instance masks)")
    device = resolve_device(args.device)
    split = args.split or "val"
    truth = open_instance_split(args.data, split, GT, training=False)
    model, config = load_instance_model(args.model, device)
    check_classes(config, truth.classes, str(args.model))
    report = evaluate_instances(
        model,
        truth,
        device,
        batch=args.batch_size,
        limit=args.limit,
        mask_threshold=args.mask_threshold,
        abo_score=args.abo_score,
        progress=not args.quiet,
    )
    print(json.dumps({"split": str(split), "arch": config.arch, "min_size": config.min_size, **report}))
    return 0
