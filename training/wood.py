"""W-OoD trainer (dissertation Sec. 4.3.2): fine-tune an in-distribution CAM classifier with hard OoD images.

Each step takes a batch of in-distribution images (multi-label BCE against their tags) and a batch of OoD images
(BCE against the zero vector), and adds lambda L_d on the in-distribution images' penultimate features
z = GAP(f(x)): pulled towards the centres of their classes, pushed from the closest tau% of the K-means
centres of the OoD features (weakseg.ood.losses). The result is an ordinary classifier checkpoint.

Centres are recomputed from the current network at the start of every `centre_every`-th epoch (0: once, from
the initial classifier, as the authors' code does) and saved in <out>/wood_centres.pt, so resuming is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.classifier import ClassifierJob, ClassifierSetup, prepare_classifier
from weakseg.data.augment import scale_flip_crop, to_tensor
from weakseg.data.loading import EpochLoader
from weakseg.engine import FitResult, fit
from weakseg.errors import WeaksegError
from weakseg.io import read_rgb
from weakseg.models.checkpoint import RESUME_NAME, load_resume, save_resume
from weakseg.models.resnet_cam import CAMClassifier
from weakseg.ood.decisions import resolve_ood_images
from weakseg.ood.kmeans import kmeans
from weakseg.ood.losses import DEFAULT_VARIANT, VARIANT_TRAINING, WoodLossConfig, embed, num_clusters, wood_loss
from weakseg.ood.mining import batched_forward

CENTRES_NAME = "wood_centres.pt"


@dataclass
class WoodJob:
    """Everything `weakseg train classifier --ood` needs on top of the classifier job (which must have init).

    The loss and centre_every/adv_steps default to weakseg.ood.losses.DEFAULT_VARIANT (the authors' code)."""

    classifier: ClassifierJob
    ood: Path  # a review folder, review.json or a list of image paths
    loss: WoodLossConfig = field(default_factory=WoodLossConfig)
    ood_batch_size: int = 8
    centre_every: int = VARIANT_TRAINING[DEFAULT_VARIANT]["centre_every"]  # recompute centres every N epochs; 0 = once
    adv_steps: int = VARIANT_TRAINING[DEFAULT_VARIANT][
        "adv_steps"
    ]  # anti-adversarial steps on OoD images before their loss
    adv_xi: float = 0.016  # step size on [0,1] pixels (the code's 0.07 in ImageNet-normalised units)
    kmeans_iters: int = 100
    select: str = "last"  # last | val_loss (image-level validation BCE; never pixel labels)
    bn: str = "frozen"  # frozen: BatchNorm keeps the initial classifier's statistics | train: updated by every batch

    def validate(self) -> WoodJob:
        """Raise WeaksegError on an unusable setting; return self."""
        self.loss.validate()
        if self.classifier.init is None:
            raise WeaksegError("W-OoD fine-tunes an in-distribution classifier: pass --init RUN")
        for ok, msg in [
            (self.ood_batch_size >= 1, "--ood-batch-size must be >= 1"),
            (self.centre_every >= 0, "--wood-centre-every must be >= 0"),
            (self.adv_steps >= 0, "--wood-adv-steps must be >= 0"),
            (self.kmeans_iters >= 1, "--wood-kmeans-iters must be >= 1"),
            (self.select in ("last", "val_loss"), "--select must be last or val_loss"),
            (self.bn in ("frozen", "train"), "--wood-bn must be frozen or train"),
        ]:
            if not ok:
                raise WeaksegError(msg)
        return self

    def record(self, ood_files: list[Path]) -> dict:
        """What pins a W-OoD run (for resume checks and run.json)."""
        return {
            "loss": self.loss.to_dict(),
            "ood_batch_size": self.ood_batch_size,
            "centre_every": self.centre_every,
            "adv_steps": self.adv_steps,
            "adv_xi": self.adv_xi,
            "kmeans_iters": self.kmeans_iters,
            "select": self.select,
            "bn": self.bn,
            "ood_images": [str(p) for p in ood_files],
        }


def gap_features(model: CAMClassifier, images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Penultimate features z = GAP(f(x)) [N, D] of whole images, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return batched_forward(lambda x: model.features(x).mean(dim=(2, 3)), images, device)
    finally:
        model.train(was_training)


def class_centres(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p_c = mean of z over the images tagged with class c, [C, D] (zeros for a class without images)."""
    counts = y.sum(0).clamp_min(1)[:, None]
    return (y.t().to(z.dtype) @ z) / counts


def anti_adversarial(model: CAMClassifier, x: torch.Tensor, xi: float, steps: int) -> torch.Tensor:
    """Authors' code: x + xi * g / max|g| with g the input gradient of the summed max logit, clamped to [0, 1]."""
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x).max(dim=1).values.sum(), x)
        x = (x + xi * grad / (grad.abs().max() + 1e-12)).clamp(0.0, 1.0)
    return x.detach()


@dataclass
class Centres:
    """The clusters of one centre epoch."""

    epoch: int
    in_centres: torch.Tensor
    ood_centres: torch.Tensor
    inertia: float


class CentreSchedule:
    """Centres for each epoch: recomputed at the start of every centre_every-th epoch, persisted for resume."""

    def __init__(
        self, job: WoodJob, setup: ClassifierSetup, ood_images: list[torch.Tensor], device: torch.device
    ) -> None:
        self.job, self.setup, self.ood_images, self.device = job, setup, ood_images, device
        self.path = job.classifier.out / CENTRES_NAME
        self.current: Centres | None = None
        self.k = num_clusters(len(ood_images), job.loss.k_max)
        self.computed_at: list[int] = []

    def source_epoch(self, epoch: int) -> int:
        """The epoch (0-based) whose starting network the centres of `epoch` come from."""
        every = self.job.centre_every
        return 0 if every == 0 else (epoch // every) * every

    def get(self, model: CAMClassifier, epoch: int) -> Centres:
        """The centres for a step of `epoch`: cached, loaded from the run folder, or computed now."""
        want = self.source_epoch(epoch)
        if self.current is not None and self.current.epoch == want:
            return self.current
        if self.path.exists():
            state = load_resume(self.path)
            if int(state["epoch"]) == want:
                self.current = Centres(want, state["in_centres"], state["ood_centres"], float(state["inertia"]))
                return self.current
        self.current = self.compute(model, want)
        return self.current

    def compute(self, model: CAMClassifier, epoch: int) -> Centres:
        """Class centres of the training images and K-means centres of the OoD images under the current network."""
        ids, features = self.setup.train_set.ids, self.job.loss.features
        z_in = embed(gap_features(model, [self.setup.cache(i) for i in ids], self.device), features)
        y = torch.stack([self.setup.labels[i] for i in ids])
        z_ood = embed(gap_features(model, self.ood_images, self.device), features)
        km = kmeans(z_ood, self.k, seed=self.job.classifier.train.seed, iters=self.job.kmeans_iters)
        centres = Centres(epoch, class_centres(z_in, y), km.centres, km.inertia)
        save_resume(
            self.path,
            {
                "epoch": epoch,
                "in_centres": centres.in_centres,
                "ood_centres": centres.ood_centres,
                "inertia": centres.inertia,
            },
        )
        self.computed_at.append(epoch)
        return centres


class WoodLoader:
    """In-distribution batches of the classifier loader, each joined by an OoD batch (`ood_image`) and its epoch.

    The OoD stream cycles through reshuffled passes fixed by (seed, epoch, pass), so an epoch replays exactly.
    """

    def __init__(self, id_loader: EpochLoader, ood_loader: EpochLoader) -> None:
        self.id_loader, self.ood_loader, self.epoch = id_loader, ood_loader, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of both streams."""
        self.epoch = epoch
        self.id_loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.id_loader)

    def __iter__(self):
        passes = 0
        ood_iter: Iterator[dict[str, Any]] = iter(())
        for batch in self.id_loader:
            ood = next(ood_iter, None)
            if ood is None:
                self.ood_loader.set_epoch(self.epoch * 100_003 + passes)
                passes += 1
                ood_iter = iter(self.ood_loader)
                ood = next(ood_iter)
            yield {**batch, "ood_image": ood["image"], "epoch": self.epoch}


def ood_metrics(model: CAMClassifier, images: list[torch.Tensor], device: torch.device) -> dict[str, float]:
    """Image-level OoD suppression: mean max_c p(c) and the share with some p(c) >= 0.5 (no pixel labels)."""
    p = batched_forward(lambda x: model(x).sigmoid(), images, device).max(dim=1).values
    return {"ood_max_p": float(p.mean()), "ood_fp": float((p >= 0.5).float().mean())}


def train_wood(job: WoodJob, device: torch.device, progress: bool = True) -> FitResult:
    """Fine-tune job.classifier.init with W-OoD (or resume); writes an ordinary classifier run folder."""
    job.validate()
    cjob = job.classifier
    ood_files = resolve_ood_images(job.ood)
    setup = prepare_classifier(cjob, device)
    if job.bn == "frozen":
        setup.model.freeze_batchnorm_stats()
    ood_images = [to_tensor(read_rgb(p)) for p in ood_files]

    def make_ood(index: int, rng: np.random.Generator) -> dict:
        return {"image": scale_flip_crop(ood_images[index], rng, cjob.crop, cjob.scale_range)[0]}

    loader = WoodLoader(setup.loader, EpochLoader(len(ood_images), make_ood, job.ood_batch_size, seed=cjob.train.seed))
    schedule = CentreSchedule(job, setup, ood_images, device)
    if not (cjob.out / RESUME_NAME).exists() and schedule.path.exists():
        schedule.path.unlink()  # centres of an unfinished earlier start; this run begins from the initial network
    cfg = job.loss
    needs_centres = cfg.lam > 0 and (cfg.pull or cfg.push)

    def loss_fn(model: CAMClassifier, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        centres = schedule.get(model, batch["epoch"]) if needs_centres else None
        x, y = batch["image"].to(device), batch["target"].to(device)
        feats = model.features(x)
        z = feats.mean(dim=(2, 3))
        logits_ood = None
        if cfg.ood_weight > 0:
            x_ood = batch["ood_image"].to(device)
            if job.adv_steps:
                x_ood = anti_adversarial(model, x_ood, job.adv_xi, job.adv_steps)
            logits_ood = model(x_ood)
        loss, parts = wood_loss(
            model.logits_from_features(feats),
            z,
            y,
            logits_ood,
            centres.in_centres.to(device) if centres else None,
            centres.ood_centres.to(device) if centres else None,
            cfg,
        )
        return loss, {**parts, "z_norm": float(z.detach().norm(dim=1).mean()), "n": len(x)}

    def on_epoch_end(model: CAMClassifier, epoch: int) -> dict[str, float]:
        out = setup.on_epoch_end(model, epoch) if setup.on_epoch_end else {}
        return {**out, **ood_metrics(model, ood_images, device)}

    def save(model: CAMClassifier, extra: dict) -> None:
        history = extra["history"]
        if job.select == "val_loss":
            losses = [h.get("val_loss") for h in history]
            if losses[-1] is None:
                raise WeaksegError("--select val_loss needs a validation split (--val-split)")
            if losses[-1] > min(losses):
                return  # an earlier epoch's checkpoint stays selected
        setup.save(model, {**extra, "selected_epoch": extra["epoch"], "select": job.select})

    run_info = {**setup.run_info, "wood": job.record(ood_files)}
    return fit(
        setup.model,
        loader,
        loss_fn,
        cjob.train,
        cjob.out,
        save,
        device=device,
        head_params=setup.head_params,
        run_info=run_info,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )
