"""CAM classifier trainer: multi-label BCE on image-level labels only, over the shared engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from weakseg.data.augment import scale_flip_crop, to_tensor
from weakseg.data.loading import EpochLoader
from weakseg.data.voc import VOCDataset
from weakseg.engine import FitResult, TrainConfig, fit, seed_everything
from weakseg.errors import WeaksegError
from weakseg.models.checkpoint import WEIGHTS_NAME, file_sha256
from weakseg.models.classifier_io import build_classifier_model, load_classifier, save_classifier
from weakseg.models.pretrained import load_pretrained_backbone
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

SCRATCH_LR, SCRATCH_HEAD_LR_MULT = 1e-3, 1.0
# With ImageNet weights (measured, benchmarks/pretrained_recipe.py, README "Pretrained backbones"): 1e-3 destroys the
# pretrained features (val F1 0 after 3 epochs), 1e-4 learns slowly; 3e-4 is best on val F1 and seed mIoU; the head's
# 10x is IRN's (x1 and x10 are within one seed's noise of each other at 3 epochs).
PRETRAINED_LR, PRETRAINED_HEAD_LR_MULT = 3e-4, 10.0


def default_learning_rates(pretrained: bool) -> tuple[float, float]:
    """(backbone lr, head lr multiplier) of a fresh classifier, from scratch or from pretrained weights."""
    return (PRETRAINED_LR, PRETRAINED_HEAD_LR_MULT) if pretrained else (SCRATCH_LR, SCRATCH_HEAD_LR_MULT)


@dataclass
class ClassifierJob:
    """Everything `weakseg train classifier` needs.

    The architecture fields (arch ... fickle_drop) left None take ClassifierConfig's defaults for a fresh network,
    or the init classifier's values with `init`; a value given that contradicts the init classifier is an error."""

    data: Path
    out: Path
    split: str = "train"
    val_split: str | None = "val"
    labels: str = "auto"
    arch: str | None = None  # resnet18 | resnet50 | resnet101 (None: ClassifierConfig's, or the init classifier's)
    output_stride: int | None = None
    head: str | None = None  # cam | fickle (FickleNet's k x k head, trained with its stochastic selection)
    fickle_kernel: int | None = None
    fickle_drop: float | None = None
    crop: int = 128
    scale_range: tuple[float, float] = (0.75, 1.25)
    pretrained: str | None = None
    init: Path | None = None  # fine-tune this classifier checkpoint instead of a fresh network
    train: TrainConfig = field(default_factory=TrainConfig)


class ImageCache:
    """Decoded images of a dataset, kept in memory after first use."""

    def __init__(self, dataset: VOCDataset) -> None:
        self.dataset = dataset
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, image_id: str) -> torch.Tensor:
        if image_id not in self._cache:
            self._cache[image_id] = to_tensor(self.dataset.image(image_id))
        return self._cache[image_id]


def classification_metrics(
    model: CAMClassifier, dataset: VOCDataset, device: torch.device, batch: int = 16
) -> dict[str, float]:
    """Image-level validation (no pixel labels): BCE loss and micro-F1 at p >= 0.5."""
    cache = ImageCache(dataset)
    losses, tp, fp, fn = [], 0, 0, 0
    with torch.no_grad():
        for i in range(0, len(dataset.ids), batch):
            ids = dataset.ids[i : i + batch]
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


@dataclass
class ClassifierSetup:
    """The pieces every classifier trainer shares: data, model, sample maker, saving, validation, run record."""

    train_set: VOCDataset
    val_set: VOCDataset | None
    classes: list[str]
    model: CAMClassifier
    cache: ImageCache
    labels: dict[str, torch.Tensor]
    loader: EpochLoader
    save: Callable[[CAMClassifier, dict], None]
    on_epoch_end: Callable[[CAMClassifier, int], dict[str, float]] | None
    run_info: dict
    head_params: list[torch.nn.Parameter]


ARCHITECTURE_FIELDS = ("arch", "output_stride", "head", "fickle_kernel", "fickle_drop")


def given_architecture(job: ClassifierJob) -> dict:
    """The architecture fields the job sets (not None), as ClassifierConfig keyword arguments."""
    return {name: getattr(job, name) for name in ARCHITECTURE_FIELDS if getattr(job, name) is not None}


def check_init_architecture(job: ClassifierJob, config: ClassifierConfig) -> None:
    """Raise WeaksegError when an architecture field given with init differs from the init classifier's config."""
    wrong = {k: v for k, v in given_architecture(job).items() if v != getattr(config, k)}
    if wrong:
        said = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in wrong.items())
        has = ", ".join(f"{k.replace('_', ' ')} {getattr(config, k)}" for k in wrong)
        raise WeaksegError(
            f"{job.init}: the init classifier has {has}; {said} contradicts it "
            "(fine-tuning keeps the init architecture: drop the option or pass its value)"
        )


def build_classifier(job: ClassifierJob, classes: list[str], device: torch.device) -> CAMClassifier:
    """A fresh classifier (seeded, optionally with a pretrained backbone) or, with job.init, a trainable copy of
    an existing checkpoint (fine-tuning); job.pretrained then only freezes the stem and BatchNorm."""
    seed_everything(job.train.seed)  # initial weights depend on the seed only
    if job.init is not None:
        model, init_classes = load_classifier(job.init, device)
        if init_classes != list(classes):
            raise WeaksegError(f"{job.init}: classifier classes {init_classes} differ from the dataset's {classes}")
        check_init_architecture(job, model.config)
        model.requires_grad_(True)
    else:
        try:
            model = build_classifier_model(ClassifierConfig(num_classes=len(classes), **given_architecture(job)))
        except ValueError as e:
            raise WeaksegError(f"bad classifier configuration: {e}") from e
        if job.pretrained:
            load_pretrained_backbone(model, job.pretrained)
    if job.pretrained:
        model.freeze_for_pretrained()
    return model.train()


def prepare_classifier(job: ClassifierJob, device: torch.device) -> ClassifierSetup:
    """Open the splits, build the model and the shuffled augmented loader, and the save/validation callbacks."""
    train_set = VOCDataset(job.data, job.split, labels=job.labels)
    val_set = VOCDataset(job.data, job.val_split, labels=job.labels) if job.val_split else None
    classes = train_set.classes
    model = build_classifier(job, classes, device)
    cache = ImageCache(train_set)
    labels = {i: torch.from_numpy(train_set.labels(i)) for i in train_set.ids}
    if not any(float(v.sum()) > 0 for v in labels.values()):
        raise WeaksegError(f"{job.data}: split {job.split!r} has no image with a class label")

    def make_sample(index: int, rng: np.random.Generator) -> dict:
        image_id = train_set.ids[index]
        image, _ = scale_flip_crop(cache(image_id), rng, job.crop, job.scale_range)
        return {"image": image, "target": labels[image_id]}

    loader = EpochLoader(len(train_set.ids), make_sample, job.train.batch_size, seed=job.train.seed)

    def save(model: CAMClassifier, extra: dict) -> None:
        save_classifier(job.out / WEIGHTS_NAME, model, classes, extra)

    on_epoch_end = (lambda m, e: classification_metrics(m, val_set, device)) if val_set and val_set.ids else None
    cfg = model.config
    run_info = {
        "kind": "classifier",
        "data": str(Path(job.data).resolve()),
        "split": job.split,
        "arch": cfg.arch,
        "output_stride": cfg.output_stride,
        "head": cfg.head,
        "crop": job.crop,
        "scale_range": list(job.scale_range),
        "pretrained": job.pretrained,
        "classes": classes,
    }
    if cfg.head == "fickle":
        run_info.update(fickle_kernel=cfg.fickle_kernel, fickle_drop=cfg.fickle_drop)
    if job.init is not None:
        run_info["init_sha256"] = file_sha256(job.init)
    return ClassifierSetup(
        train_set,
        val_set,
        classes,
        model,
        cache,
        labels,
        loader,
        save,
        on_epoch_end,
        run_info,
        list(model.classifier.parameters()),
    )


def train_classifier(job: ClassifierJob, device: torch.device, progress: bool = True) -> FitResult:
    """Train (or resume) a CAM classifier; writes <out>/model.safetensors, resume.pt and run.json."""
    setup = prepare_classifier(job, device)

    def loss_fn(model: CAMClassifier, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["image"].to(device))
        return F.multilabel_soft_margin_loss(logits, batch["target"].to(device)), {"n": len(batch["image"])}

    return fit(
        setup.model,
        setup.loader,
        loss_fn,
        job.train,
        job.out,
        setup.save,
        device=device,
        head_params=setup.head_params,
        run_info=setup.run_info,
        progress=progress,
        on_epoch_end=setup.on_epoch_end,
    )
