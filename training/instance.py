"""Mask R-CNN trainer on true or pseudo instance masks (ignore regions left out of the mask loss), over the shared
engine through the detector trainer's pieces: per-epoch checkpoints, exact resume, progress; optional mask AP50 on
a validation split (true masks) after each epoch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from training.detector import (
    DetectorJob,
    DetectorSetup,
    detector_config,
    fit_rcnn,
    rcnn_run_info,
    rcnn_setup,
    seeded_model,
)
from weakseg.data.instances import GT, label_manifest, open_instance_split
from weakseg.engine import FitResult
from weakseg.errors import WeaksegError
from weakseg.models.instance import (
    MASK_HEAD_DIM,
    MASK_HEAD_LAYERS,
    InstanceConfig,
    build_instance_model,
    save_instance_model,
)
from weakseg.models.instance_eval import evaluate_instances


@dataclass
class InstanceJob(DetectorJob):
    """Everything `weakseg train instance` needs: a detector job plus the masks' source and the mask head."""

    labels: str = GT  # 'gt' (SegmentationObject + XML) or a pseudo-label folder with instances/
    mask_head_dim: int = MASK_HEAD_DIM
    mask_head_layers: int = MASK_HEAD_LAYERS


def instance_config(job: InstanceJob, classes: list[str]) -> InstanceConfig:
    """The InstanceConfig of a job; WeaksegError for a bad combination."""
    base = detector_config(job, classes)
    try:
        return InstanceConfig(
            **{**base.to_dict(), "classes": base.classes},
            mask_head_dim=job.mask_head_dim,
            mask_head_layers=job.mask_head_layers,
        )
    except ValueError as e:
        raise WeaksegError(f"bad Mask R-CNN configuration: {e}") from e


def prepare_instance(job: InstanceJob, device: torch.device) -> DetectorSetup:
    """Open and check the splits (every target read once), build the (seeded) Mask R-CNN, the loader and callbacks."""
    train_split = open_instance_split(job.data, job.split, job.labels, training=True)
    val_split = open_instance_split(job.data, job.val_split, GT, training=False) if job.val_split else None
    config = instance_config(job, train_split.classes)
    model = seeded_model(build_instance_model, config, job)

    def validate(model: nn.Module) -> dict[str, float]:
        assert val_split is not None
        report = evaluate_instances(model, val_split, device, limit=job.val_images)
        return {"val_mask_ap50": report["ap50"], "val_mask_ap": report["coco_ap"], "val_abo": report["abo"]}

    manifest = label_manifest(train_split.labels) if train_split.labels is not None else {}
    run_info = {
        **rcnn_run_info(job, train_split, config, "instance"),
        "labels": str(Path(train_split.labels).resolve()) if train_split.labels is not None else GT,
        "labels_method": manifest.get("method"),
        "train_instances": train_split.instances,
        "images_without_labels": len(train_split.missing),
        "skipped_without_instances": len(train_split.skipped),
        "instances_without_pixels": train_split.empty,
    }
    return rcnn_setup(job, train_split, val_split, config, model, save_instance_model, validate, run_info)


def train_instance(job: InstanceJob, device: torch.device, progress: bool = True) -> FitResult:
    """Train (or resume) a Mask R-CNN; writes <out>/model.safetensors, resume.pt and run.json."""
    setup = prepare_instance(job, device)
    if progress:
        info = setup.run_info
        for count, what in (
            (info["images_without_labels"], "have no pseudo label in the folder"),
            (info["skipped_without_instances"], "have no (non-difficult) instance with pixels"),
        ):
            if count:
                print(f"note: {count} images of split {job.split!r} {what} and are left out", flush=True)
    return fit_rcnn(setup, job, device, progress)
