"""CAM classifier trainer: multi-label BCE on image-level labels only, over the shared engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from weakseg.data.augment import scale_flip_crop, to_tensor
from weakseg.data.loading import EpochLoader
from weakseg.data.voc import VOCDataset
from weakseg.engine import FitResult, TrainConfig, fit, seed_everything
from weakseg.errors import WeaksegError
from weakseg.models.classifier_io import save_classifier
from weakseg.models.checkpoint import WEIGHTS_NAME
from weakseg.models.pretrained import load_pretrained_backbone
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig


@dataclass
class ClassifierJob:
    """Everything `weakseg train classifier` needs."""

    data: Path
    out: Path
    split: str = "train"
    val_split: str | None = "val"
    labels: str = "auto"
    arch: str = "resnet18"
    output_stride: int = 8
    head: str = "cam"  # cam | fickle (FickleNet's k x k head, trained with its stochastic selection)
    fickle_kernel: int = 3
    fickle_drop: float = 0.9
    crop: int = 128
    scale_range: tuple[float, float] = (0.75, 1.25)
    pretrained: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


class ImageCache:
    """Decoded images of a dataset, kept in memory after first use."""

    def __init__(self, dataset: VOCDataset) -> None:
        self.dataset, self._cache = dataset, {}

    def __call__(self, image_id: str) -> torch.Tensor:
        if image_id not in self._cache:
            self._cache[image_id] = to_tensor(self.dataset.image(image_id))
        return self._cache[image_id]


def classification_metrics(model: CAMClassifier, dataset: VOCDataset, device: torch.device, batch: int = 16) -> dict[str, float]:
    """Image-level validation (no pixel labels): BCE loss and micro-F1 at p >= 0.5."""
    cache = ImageCache(dataset)
    losses, tp, fp, fn = [], 0, 0, 0
    with torch.no_grad():
        for i in range(0, len(dataset.ids), batch):
            ids = dataset.ids[i:i + batch]
            images = [cache(j) for j in ids]
            if len({tuple(t.shape) for t in images}) > 1:  # varying sizes: one at a time
                logits = torch.cat([model(t[None].to(device)) for t in images])
            else:
                logits = model(torch.stack(images).to(device))
            target = torch.stack([torch.from_numpy(dataset.labels(j)) for j in ids]).to(device)
            losses.append(F.multilabel_soft_margin_loss(logits, target, reduction="sum").item())
            pred = logits.sigmoid() >= 0.5
            tp += int((pred & (target > 0)).sum())
            fp += int((pred & (target == 0)).sum())
            fn += int((~pred & (target > 0)).sum())
    return {"val_loss": sum(losses) / max(1, len(dataset.ids)), "val_f1": 2 * tp / max(1, 2 * tp + fp + fn)}


def train_classifier(job: ClassifierJob, device: torch.device, progress: bool = True) -> FitResult:
    """Train (or resume) a CAM classifier; writes <out>/model.safetensors, resume.pt and run.json."""
    train_set = VOCDataset(job.data, job.split, labels=job.labels)
    val_set = VOCDataset(job.data, job.val_split, labels=job.labels) if job.val_split else None
    classes = train_set.classes
    seed_everything(job.train.seed)  # initial weights depend on the seed only
    try:
        model = CAMClassifier(ClassifierConfig(num_classes=len(classes), arch=job.arch, output_stride=job.output_stride,
                                               head=job.head, fickle_kernel=job.fickle_kernel, fickle_drop=job.fickle_drop))
    except ValueError as e:
        raise WeaksegError(f"bad classifier configuration: {e}") from e
    if job.pretrained:
        load_pretrained_backbone(model, job.pretrained)
        model.freeze_for_pretrained()
    cache = ImageCache(train_set)
    labels = {i: torch.from_numpy(train_set.labels(i)) for i in train_set.ids}
    if not any(float(v.sum()) > 0 for v in labels.values()):
        raise WeaksegError(f"{job.data}: split {job.split!r} has no image with a class label")

    def make_sample(index: int, rng: np.random.Generator) -> dict:
        image_id = train_set.ids[index]
        image, _ = scale_flip_crop(cache(image_id), rng, job.crop, job.scale_range)
        return {"image": image, "target": labels[image_id]}

    loader = EpochLoader(len(train_set.ids), make_sample, job.train.batch_size, seed=job.train.seed)

    def loss_fn(model: CAMClassifier, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["image"].to(device))
        return F.multilabel_soft_margin_loss(logits, batch["target"].to(device)), {"n": len(batch["image"])}

    def save(model: CAMClassifier, extra: dict) -> None:
        save_classifier(job.out / WEIGHTS_NAME, model, classes, extra)

    on_epoch_end = (lambda m, e: classification_metrics(m, val_set, device)) if val_set and val_set.ids else None
    run_info = {"kind": "classifier", "data": str(Path(job.data).resolve()), "split": job.split, "arch": job.arch,
                "output_stride": job.output_stride, "head": job.head, "crop": job.crop,
                "scale_range": list(job.scale_range), "pretrained": job.pretrained, "classes": classes}
    if job.head == "fickle":
        run_info.update(fickle_kernel=job.fickle_kernel, fickle_drop=job.fickle_drop)
    head = list(model.classifier.parameters())
    return fit(model, loader, loss_fn, job.train, job.out, save, device=device, head_params=head,
               run_info=run_info, progress=progress, on_epoch_end=on_epoch_end)
