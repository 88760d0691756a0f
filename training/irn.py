"""IRN trainer over the shared engine: boundary and displacement branches on a frozen classifier backbone,
trained on inter-pixel affinity labels from the confident seeds of a maps folder (the authors' train_irn.py).

Inputs: a pseudo-label folder (`weakseg pseudo --out`: manifest.json and maps/<id>.npz), the dataset, and the
classifier whose backbone IRN sits on (the one the maps' manifest records, unless given). The ir labels (IRN's
cam_to_ir_label: fg 0.30 / bg 0.05, CRF) are computed once into <out>/ir_labels/<id>.png (atomic writes, pinned
by <out>/ir_labels/settings.json), so a resumed run reuses them. Samples get the authors' recipe: random rescale
(0.5..1.5), flip, crop (image padded with the mean colour, label with 255), the label reduced to stride 4 and
turned into pair labels within radius 10. SGD with poly decay, lr 0.1 for the boundary branch and x10 for the
displacement branch, weight decay 1e-4; the authors' PolyOptimizer hands its weight decay to SGD's momentum slot,
so their SGD's momentum is 1e-4, kept here. After the last epoch the mean displacement over the training images
is stored in the model (the authors' MeanShift).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from weakseg.data.augment import scale_flip_crop, to_tensor
from weakseg.data.classes import voc_palette
from weakseg.data.loading import EpochLoader
from weakseg.data.voc import VOCDataset
from weakseg.engine import FitResult, TrainConfig, fit, seed_everything
from weakseg.errors import DataError, WeaksegError
from weakseg.io import atomic_save_png, atomic_write_json, read_label_png
from weakseg.models.checkpoint import WEIGHTS_NAME, file_sha256, resolve_weights
from weakseg.models.classifier_io import load_classifier
from weakseg.models.irn import IRN, OUTPUT_STRIDE, IRNConfig, save_irn
from weakseg.models.irn_infer import padded_pair
from weakseg.refine.crf import CRFConfig
from weakseg.refine.irn_labels import (
    TRAIN_RADIUS,
    affinity_labels,
    fraction_warnings,
    ir_label,
    label_fractions,
    reduce_label,
)
from weakseg.refine.irn_loss import irn_loss
from weakseg.report.seed_eval import load_maps

MAX_CROP = 512  # the authors' crop
IR_LABELS = "ir_labels"
MANIFEST = "manifest.json"


def irn_train_config() -> TrainConfig:
    """The authors' optimisation (3 epochs, SGD lr 0.1 poly, x10 displacement, wd 1e-4) at a CPU-sized batch 8."""
    return TrainConfig(
        epochs=3, batch_size=8, lr=0.1, weight_decay=1e-4, optimizer="sgd", momentum=1e-4, head_lr_mult=10.0
    )


@dataclass
class IRNJob:
    """Everything `weakseg train irn` needs."""

    maps: Path  # a pseudo-label folder (manifest.json, maps/) or its maps/ folder
    data: Path
    out: Path
    model: Path | None = None  # the classifier; None: the one the maps' manifest records
    split: str | None = None  # None: the maps' split
    crop: int | None = None  # None: min(512, the largest image side), a multiple of 4
    scale_range: tuple[float, float] = (0.5, 1.5)
    radius: int = TRAIN_RADIUS
    fg_thresh: float = 0.30
    bg_thresh: float = 0.05
    crf: bool = True
    skip_missing: bool = False  # train on the ids that have maps instead of refusing a split with gaps
    edge_width: int = 32
    disp_width: int = 0  # 0: from the backbone (weakseg.models.irn.default_disp_width)
    train: TrainConfig = field(default_factory=irn_train_config)


@dataclass
class MapsFolder:
    """A pseudo-label folder's maps and manifest."""

    root: Path
    maps: Path
    manifest: dict[str, Any]

    def path(self, image_id: str) -> Path:
        """maps/<id>.npz."""
        return self.maps / f"{image_id}.npz"


def open_maps(path: str | Path) -> MapsFolder:
    """The maps folder and its manifest.json; DataError when either is missing or unreadable."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: maps folder not found")
    root, maps = (p, p / "maps") if (p / "maps").is_dir() else (p.parent, p)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: no manifest next to the maps (pass the folder `weakseg pseudo --out` wrote)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{manifest_path}: unreadable manifest ({e})") from e
    if not isinstance(manifest, dict):
        raise DataError(f"{manifest_path}: not a pseudo-label manifest")
    return MapsFolder(root, maps, manifest)


def classifier_path(job: IRNJob, folder: MapsFolder) -> Path:
    """The classifier IRN sits on: --model, else the one the maps' manifest records; CheckpointError if absent."""
    if job.model is not None:
        path = Path(job.model)
    elif folder.manifest.get("model"):
        path = Path(folder.manifest["model"])
    else:
        raise WeaksegError(
            f"{folder.root / MANIFEST}: records no classifier (written before manifests named it); pass --model RUN"
        )
    resolve_weights(path)  # CheckpointError naming the file when it is missing
    return path


def default_crop(dataset: VOCDataset, ids: list[str]) -> int:
    """min(512, the largest image side of the ids), rounded down to a multiple of 4."""
    largest = max(max(dataset.image_size(i)) for i in ids)
    return min(MAX_CROP, largest) // OUTPUT_STRIDE * OUTPUT_STRIDE


def check_crop(crop: int, radius: int) -> None:
    """Refuse a crop that is not a multiple of 4 or whose stride-4 grid holds no pair within the radius."""
    if crop < OUTPUT_STRIDE or crop % OUTPUT_STRIDE:
        raise WeaksegError(f"--crop must be a positive multiple of {OUTPUT_STRIDE}, got {crop}")
    if radius < 2:
        raise WeaksegError(f"--radius must be >= 2, got {radius}")
    cells = crop // OUTPUT_STRIDE
    if cells <= 2 * (radius - 1):
        raise WeaksegError(
            f"--crop {crop} gives a {cells}x{cells} grid at stride 4: no pair within --radius {radius} fits "
            f"(need crop > {8 * (radius - 1)}, or radius <= {max(1, (cells - 1) // 2)})"
        )


def training_ids(job: IRNJob, dataset: VOCDataset, folder: MapsFolder, progress: bool) -> list[str]:
    """The split's ids that have maps; DataError when some lack them (unless skip_missing) or none has them."""
    have = [i for i in dataset.ids if folder.path(i).is_file()]
    missing = [i for i in dataset.ids if not folder.path(i).is_file()]
    if not have:
        raise DataError(f"{folder.maps}: no maps for any image of split {dataset.split_path.stem!r}")
    if missing and not job.skip_missing:
        raise DataError(
            f"{folder.path(missing[0])}: {len(missing)} of {len(dataset.ids)} images of the split have no maps "
            "(pass --skip-missing to train on the others)"
        )
    if missing and progress:
        print(f"note: {len(missing)} of {len(dataset.ids)} images have no maps and are left out", flush=True)
    return have


def ir_label_settings(job: IRNJob, folder: MapsFolder) -> dict[str, Any]:
    """What the cached ir labels depend on: the thresholds, the CRF and the maps' pinned configuration."""
    pinned = {k: folder.manifest.get(k) for k in ("method", "multiscale", "model_sha256", "classes", "split")}
    return json.loads(
        json.dumps(
            {
                "fg_thresh": job.fg_thresh,
                "bg_thresh": job.bg_thresh,
                "crf": asdict(CRFConfig()) if job.crf else None,
                "maps": pinned,
            }
        )
    )


def ensure_ir_labels(
    job: IRNJob, dataset: VOCDataset, folder: MapsFolder, ids: list[str], progress: bool
) -> dict[str, Any]:
    """Compute the missing <out>/ir_labels/<id>.png (cached; a different configuration is refused)."""
    cache = Path(job.out) / IR_LABELS
    settings = ir_label_settings(job, folder)
    settings_path = cache / "settings.json"
    if settings_path.is_file():
        try:
            existing = json.loads(settings_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{settings_path}: unreadable ({e}); remove {cache}") from e
        if existing != settings:
            raise WeaksegError(
                f"{cache}: holds ir labels made with other settings or maps; use a new --out or remove {cache}"
            )
    else:
        atomic_write_json(settings_path, settings)
    todo = [i for i in ids if not (cache / f"{i}.png").is_file()]
    n = len(dataset.classes)
    crf = CRFConfig() if job.crf else None
    for image_id in tqdm(todo, desc="ir labels", unit="img", disable=not progress or not todo, leave=False):
        maps, class_ids = load_maps(folder.path(image_id))
        image = dataset.image(image_id)
        if maps.ndim != 3 or maps.shape[1:] != image.shape[:2]:
            raise DataError(f"{folder.path(image_id)}: maps are {maps.shape} but the image is {image.shape[:2]}")
        if class_ids.size and (class_ids.min() < 1 or class_ids.max() > n):
            raise DataError(f"{folder.path(image_id)}: class ids {class_ids.tolist()} outside 1..{n}")
        label = ir_label(image, maps, class_ids, job.fg_thresh, job.bg_thresh, crf)
        atomic_save_png(cache / f"{image_id}.png", label, voc_palette())
    return settings


class IRNSamples:
    """Training samples: augmented image crop and its pair labels (bool [D,h,w]) from the cached ir label."""

    def __init__(self, dataset: VOCDataset, ids: list[str], label_dir: Path, job: IRNJob, crop: int) -> None:
        self.dataset, self.ids, self.label_dir, self.job, self.crop = dataset, ids, label_dir, job, crop
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def pair(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(image float [3,H,W], ir label int64 [H,W]), decoded once."""
        if image_id not in self._cache:
            image = to_tensor(self.dataset.image(image_id))
            label = read_label_png(self.label_dir / f"{image_id}.png")
            self._cache[image_id] = (image, torch.from_numpy(label.astype(np.int64)))
        return self._cache[image_id]

    def __call__(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        image, label = self.pair(self.ids[index])
        image, label = scale_flip_crop(image, rng, self.crop, self.job.scale_range, label=label)
        bg, fg, neg = affinity_labels(reduce_label(label.numpy()), self.job.radius)
        return {
            "image": image,
            "bg_pos": torch.from_numpy(bg.astype(bool)),
            "fg_pos": torch.from_numpy(fg.astype(bool)),
            "neg": torch.from_numpy(neg.astype(bool)),
        }


def mean_displacement(model: IRN, samples: IRNSamples, device: torch.device) -> torch.Tensor:
    """The mean displacement [2] over the training images' stride-4 cells (each image padded to the crop,
    cropped top-left to it when larger, as the authors' analysis pass), averaged over images."""
    means = []
    with torch.no_grad():
        for image_id in samples.ids:
            image = samples.dataset.image(image_id)[: samples.crop, : samples.crop]
            h, w = math.ceil(image.shape[0] / OUTPUT_STRIDE), math.ceil(image.shape[1] / OUTPUT_STRIDE)
            _, disp = model(padded_pair(model, image, device)[:1])
            means.append(disp[0, :, :h, :w].mean(dim=(1, 2)))
    return torch.stack(means).mean(0)


@dataclass
class IRNSetup:
    """What fit() needs for an IRN run: the model, its loader, loss, callbacks and run record."""

    model: IRN
    loader: EpochLoader
    loss_fn: Callable[[IRN, dict], tuple[torch.Tensor, dict[str, float]]]
    on_epoch_end: Callable[[IRN, int], dict[str, float]]
    save: Callable[[IRN, dict], None]
    run_info: dict[str, Any]


def prepare_irn(job: IRNJob, device: torch.device, progress: bool = True) -> IRNSetup:
    """Check the inputs, cache the ir labels and build the model, loader, loss and callbacks of an IRN run."""
    folder = open_maps(job.maps)
    clf_path = classifier_path(job, folder)
    split = job.split or folder.manifest.get("split") or "train"
    dataset = VOCDataset(job.data, split)
    classes = dataset.classes
    manifest_classes = folder.manifest.get("classes")
    if manifest_classes not in (None, classes):
        raise DataError(f"{folder.root}: maps were made for classes {manifest_classes} but {job.data} has {classes}")
    classifier, clf_classes = load_classifier(clf_path, "cpu")
    if clf_classes and clf_classes != classes:
        raise WeaksegError(f"{clf_path}: classifier classes {clf_classes} differ from the dataset's {classes}")
    clf_sha = file_sha256(clf_path)
    maps_sha = folder.manifest.get("model_sha256")
    if progress and maps_sha and maps_sha != clf_sha:
        print(f"note: {clf_path} is not the classifier the maps were made with (sha256 differs)", file=sys.stderr)
    if job.edge_width < 1 or job.disp_width < 0:
        raise WeaksegError(f"--edge-width must be >= 1 and --disp-width >= 0, got {job.edge_width}, {job.disp_width}")
    ids = training_ids(job, dataset, folder, progress)
    crop = job.crop if job.crop is not None else default_crop(dataset, ids)
    check_crop(crop, job.radius)
    settings = ensure_ir_labels(job, dataset, folder, ids, progress)
    fractions = label_fractions([read_label_png(Path(job.out) / IR_LABELS / f"{i}.png") for i in ids])
    atomic_write_json(Path(job.out) / IR_LABELS / "summary.json", {"images": len(ids), **fractions})
    if progress:
        print(
            "ir labels: {:.1%} confident foreground, {:.1%} confident background, {:.1%} unsure".format(
                fractions["confident_fg"], fractions["confident_bg"], fractions["unsure"]
            ),
            flush=True,
        )
        for line in fraction_warnings(fractions, job.fg_thresh, job.bg_thresh):
            print(f"warning: {line}", file=sys.stderr, flush=True)

    seed_everything(job.train.seed)  # initial branch weights depend on the seed only
    try:
        model = IRN(classifier, IRNConfig(edge_width=job.edge_width, disp_width=job.disp_width, crop=crop))
    except ValueError as e:
        raise WeaksegError(f"bad IRN configuration: {e}") from e
    samples = IRNSamples(dataset, ids, Path(job.out) / IR_LABELS, job, crop)
    loader = EpochLoader(len(ids), samples, job.train.batch_size, seed=job.train.seed)
    radius = job.radius

    def loss_fn(model: IRN, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        edge, disp = model(batch["image"].to(device))
        if not bool(torch.isfinite(edge).all()):
            raise WeaksegError("the boundary logits became non-finite; lower --lr")
        bg, fg, neg = (batch[k].to(device).float() for k in ("bg_pos", "fg_pos", "neg"))
        loss = irn_loss(edge, disp, bg, fg, neg, radius=radius)
        return loss.total, {"n": len(batch["image"]), **loss.terms()}

    def on_epoch_end(model: IRN, epoch: int) -> dict[str, float]:
        if epoch < job.train.epochs:
            return {}
        model.mean_shift.copy_(mean_displacement(model, samples, device))
        return {"mean_shift_dy": float(model.mean_shift[0]), "mean_shift_dx": float(model.mean_shift[1])}

    run_info: dict[str, Any] = {
        "kind": "irn",
        "data": str(Path(job.data).resolve()),
        "split": split,
        "maps": str(folder.root.resolve()),
        "maps_method": folder.manifest.get("method"),
        "maps_model_sha256": maps_sha,
        "model": str(Path(clf_path).resolve()),
        "model_sha256": clf_sha,
        "train_images": len(ids),
        "crop": crop,
        "scale_range": list(job.scale_range),
        "radius": radius,
        "ir_labels": {k: v for k, v in settings.items() if k != "maps"},
        "irn": model.config.to_dict(),
        "classes": classes,
    }

    def save(model: IRN, extra: dict) -> None:
        info = {k: run_info[k] for k in ("model_sha256", "maps", "maps_model_sha256", "train_images", "radius")}
        save_irn(Path(job.out) / WEIGHTS_NAME, model, classes, {**extra, **info})

    return IRNSetup(model, loader, loss_fn, on_epoch_end, save, run_info)


def train_irn(job: IRNJob, device: torch.device, progress: bool = True) -> FitResult:
    """Train (or resume) an IRN; writes <out>/model.safetensors, resume.pt, run.json and ir_labels/."""
    setup = prepare_irn(job, device, progress)
    return fit(
        setup.model,
        setup.loader,
        setup.loss_fn,
        job.train,
        job.out,
        setup.save,
        device=device,
        head_params=setup.model.displacement_parameters(),
        run_info=setup.run_info,
        progress=progress,
        on_epoch_end=setup.on_epoch_end,
    )
