"""Faster R-CNN box-detector trainer (VOC XML boxes only), over the shared engine: per-epoch checkpoints, exact
resume, progress; optional COCO AP50 on a validation split after each epoch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN

from weakseg.data.detection import DetectionImages, DetectionSplit, open_detection_split
from weakseg.data.loading import EpochLoader
from weakseg.engine import FitResult, TrainConfig, fit, seed_everything
from weakseg.errors import WeaksegError
from weakseg.models.checkpoint import WEIGHTS_NAME
from weakseg.models.detector import (
    BOX_HEAD_DIM,
    DEFAULT_ARCH,
    LITE_ARCHS,
    DetectorConfig,
    build_detector,
    save_detector,
)
from weakseg.models.detector_eval import evaluate_detector


@dataclass
class DetectorJob:
    """Everything `weakseg train detector` needs."""

    data: Path
    out: Path
    split: str = "train"
    val_split: str | None = "val"
    val_images: int | None = None  # cap on validation images scored each epoch (None: the whole split)
    arch: str = DEFAULT_ARCH
    pretrained: str | None = None  # EfficientNet-Lite ImageNet weights: efficientnet-liteN, imagenet or a path
    min_size: int = 320
    max_size: int = 640
    box_batch_size_per_image: int = 128
    box_head_dim: int = BOX_HEAD_DIM
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=12, batch_size=4, lr=1e-4, weight_decay=1e-4, warmup_steps=100)
    )


def detector_config(job: DetectorJob, classes: list[str]) -> DetectorConfig:
    """The DetectorConfig of a job; WeaksegError for a bad combination (e.g. --pretrained with a torchvision arch)."""
    if job.pretrained and job.arch not in LITE_ARCHS:
        raise WeaksegError(
            f"--pretrained {job.pretrained} needs an EfficientNet-Lite arch ({', '.join(LITE_ARCHS)}): torchvision's "
            f"{job.arch} weights cannot be downloaded here, so it trains from scratch"
        )
    try:
        return DetectorConfig(
            arch=job.arch,
            classes=tuple(classes),
            min_size=job.min_size,
            max_size=job.max_size,
            pretrained_backbone=bool(job.pretrained),
            box_batch_size_per_image=job.box_batch_size_per_image,
            box_head_dim=job.box_head_dim,
        )
    except ValueError as e:
        raise WeaksegError(f"bad detector configuration: {e}") from e


def backbone_parameters(model: FasterRCNN) -> set[int]:
    """ids of the backbone body's parameters (the rest: FPN, RPN and box heads, the 'head' group)."""
    return {id(p) for p in model.backbone.body.parameters()}


def _split_list(split: DetectionSplit) -> str:
    """The split's list file, relative to the dataset root when it lies inside (ImageSets/Main/train.txt)."""
    path, root = split.dataset.split_path, split.dataset.root
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path.resolve())


@dataclass
class DetectorSetup:
    """The pieces of a detector run: data, model, loader, callbacks and the run record."""

    train_split: DetectionSplit
    val_split: DetectionSplit | None
    config: DetectorConfig
    model: nn.Module
    loader: EpochLoader
    save: Callable[[nn.Module, dict[str, Any]], None]
    on_epoch_end: Callable[[nn.Module, int], dict[str, float]] | None
    run_info: dict[str, Any]
    head_params: list[nn.Parameter]


def prepare_detector(job: DetectorJob, device: torch.device) -> DetectorSetup:
    """Open and check the splits, build the (seeded) detector, the flip-augmented loader and the callbacks."""
    train_split = open_detection_split(job.data, job.split, training=True)
    val_split = open_detection_split(job.data, job.val_split, training=False) if job.val_split else None
    config = detector_config(job, train_split.classes)
    model = seeded_model(build_detector, config, job)

    def validate(model: nn.Module) -> dict[str, float]:
        assert val_split is not None
        report = evaluate_detector(model, val_split, device, limit=job.val_images)
        return {"val_ap50": report["coco_ap50"], "val_ap": report["coco_ap"]}

    run_info = {
        **rcnn_run_info(job, train_split, config, "detector"),
        "skipped_without_boxes": len(train_split.skipped),
    }
    return rcnn_setup(job, train_split, val_split, config, model, save_detector, validate, run_info)


def seeded_model(build: Callable[[Any, str | None], nn.Module], config: DetectorConfig, job: DetectorJob) -> nn.Module:
    """build(config, job.pretrained) with the job's seed set first (initial weights depend on the seed only);
    WeaksegError for a ValueError of the builder."""
    seed_everything(job.train.seed)
    try:
        return build(config, job.pretrained)
    except ValueError as e:
        raise WeaksegError(str(e)) from e


def rcnn_run_info(job: DetectorJob, train_split: DetectionSplit, config: DetectorConfig, kind: str) -> dict[str, Any]:
    """The run record an R-CNN run is resumed against: kind, data, split, its list file, images and the config."""
    return {
        "kind": kind,
        "data": str(Path(job.data).resolve()),
        "split": job.split,
        "split_list": _split_list(train_split),
        "train_images": len(train_split.ids),
        "pretrained": job.pretrained,
        **config.to_dict(),
    }


def rcnn_setup(
    job: DetectorJob,
    train_split: DetectionSplit,
    val_split: DetectionSplit | None,
    config: DetectorConfig,
    model: nn.Module,
    save_checkpoint: Callable[[Path, nn.Module, Any, dict[str, Any]], None],
    validate: Callable[[nn.Module], dict[str, float]],
    run_info: dict[str, Any],
) -> DetectorSetup:
    """The flip-augmented loader over train_split's targets (boxes, and masks where the split has them), the
    per-epoch save (save_checkpoint(path, model, config, extra)) and validation callbacks, the head group (all but
    the backbone body) of an R-CNN run."""
    images = DetectionImages(train_split)

    def make_sample(index: int, rng: np.random.Generator) -> dict[str, Any]:
        return {"sample": images.training_sample(train_split.ids[index], rng)}

    loader = EpochLoader(len(train_split.ids), make_sample, job.train.batch_size, seed=job.train.seed)

    def save(model: nn.Module, extra: dict[str, Any]) -> None:
        save_checkpoint(job.out / WEIGHTS_NAME, model, config, {**extra, "train_images": len(train_split.ids)})

    def on_epoch_end(model: nn.Module, epoch: int) -> dict[str, float]:
        return validate(model)

    body = backbone_parameters(model)
    return DetectorSetup(
        train_split,
        val_split,
        config,
        model,
        loader,
        save,
        on_epoch_end if val_split is not None else None,
        run_info,
        [p for p in model.parameters() if id(p) not in body],
    )


def detection_loss(
    device: torch.device,
) -> Callable[[nn.Module, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]:
    """The engine's loss function: the sum of the R-CNN's losses (Faster R-CNN's four: RPN and box head, class and
    box each; Mask R-CNN adds its mask loss)."""

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        images = [image.to(device) for image, _ in batch["sample"]]
        targets = [{k: v.to(device) for k, v in target.items()} for _, target in batch["sample"]]
        losses = model(images, targets)
        total = torch.stack(list(losses.values())).sum()
        return total, {"n": len(images), **{k: float(v.detach()) for k, v in losses.items()}}

    return loss_fn


def train_detector(job: DetectorJob, device: torch.device, progress: bool = True) -> FitResult:
    """Train (or resume) a detector; writes <out>/model.safetensors, resume.pt and run.json."""
    setup = prepare_detector(job, device)
    if progress and setup.train_split.skipped:
        shown = ", ".join(setup.train_split.skipped[:3]) + (" ..." if len(setup.train_split.skipped) > 3 else "")
        print(
            f"note: {len(setup.train_split.skipped)} of {len(setup.train_split.dataset.ids)} images of split "
            f"{job.split!r} have no (non-difficult) box and are left out: {shown}",
            flush=True,
        )
    return fit_rcnn(setup, job, device, progress)


def fit_rcnn(setup: DetectorSetup, job: DetectorJob, device: torch.device, progress: bool) -> FitResult:
    """Run the engine over an R-CNN setup: the sum of the model's losses, checkpoints and resume in job.out."""
    return fit(
        setup.model,
        setup.loader,
        detection_loss(device),
        job.train,
        job.out,
        setup.save,
        device=device,
        head_params=setup.head_params,
        run_info=setup.run_info,
        progress=progress,
        on_epoch_end=setup.on_epoch_end,
    )
