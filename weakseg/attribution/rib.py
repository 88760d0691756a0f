"""RIB (dissertation 3.4): reduce the information bottleneck by adapting a copy of the classifier to each image.

theta_k = theta_{k-1} - lr * grad L_RIB,  L_RIB = -sum_c t_c min(m, y^c)  (no final sigmoid), for k = 1..K, on a batch
of the image (with its flip) plus B-1 random other training images, the logits y pooled by GNDRP (or GAP). The
map is sum_{k=0..K} CAM(x; theta_k).

- The caller's model is never touched: theta_1..theta_K are one deep copy updated in place (eval mode, so
  BatchNorm uses its running statistics and the image's rows never interact with the companions').
- The companions come from a training split (`data`, `split`, `labels`): they are drawn, and augmented as in
  classifier training (random scale, flip, crop), by a generator seeded with (seed, image id), so any worker
  computes the same map for an image. The image id is image_key without compute_maps' '@<scale>' suffix.
- The adaptation runs once per image, on the first scale of compute_maps (1.0 by default), and serves every
  scale (`multiscale_maps`): after each step the CAMs of all scales are taken from the copy before it is
  updated again, so one image costs one extra model (not K+1) and nothing outlives its compute_maps call.
  (scale_maps called on its own adapts on the batch it is given.)
- Decoded companion images are cached per pool up to COMPANION_CACHE_BYTES (least recently used evicted),
  and at most MAX_POOLS pools (dataset splits) are kept per process.
- The plain SGD step of the text is the default. The authors' code differs, offered as options: margin as an
  early stop on the summed target logits (margin_mode=stop), companions sharing no class with the image
  (disjoint), a 10x head learning rate (head_lr_mult=10), and GNDRP as a masked mean of the raw CAM over all
  locations (gndrp_mode=masked_mean). (Their poly learning-rate decay, weight decay, and stop when the map
  'explodes' are not reproduced.)
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from weakseg.attribution.base import AttributionMethod
from weakseg.attribution.cam import CAM
from weakseg.attribution.compose import Adapted
from weakseg.attribution.gndrp import gap, gndrp
from weakseg.attribution.keys import image_id_of, stable_hash
from weakseg.errors import DataError, WeaksegError
from weakseg.models.contract import CAMModel


@dataclass(frozen=True)
class RIB(AttributionMethod):
    """Per-image adaptation with L_RIB; the map sums the CAMs of every adapted model."""

    steps: int = field(default=10, metadata={"help": "K: adaptation iterations"})
    lr: float = field(default=8e-6, metadata={"help": "lambda: learning rate of the adaptation (plain SGD)"})
    batch: int = field(
        default=20, metadata={"help": "B: the image plus B-1 random other training images per iteration"}
    )
    margin: float = field(default=600.0, metadata={"help": "m: margin of L_RIB = -sum_c t_c min(m, y^c)"})
    pooling: str = field(
        default="gndrp",
        metadata={"help": "pooling of the class maps into logits during adaptation", "choices": ["gndrp", "gap"]},
    )
    tau: float = field(
        default=0.4, metadata={"help": "GNDRP threshold: pool the locations whose normalised CAM <= tau"}
    )
    data: str = field(
        default="",
        metadata={
            "help": "VOC2012 folder of the training set the companions are drawn from (required)",
            "location": True,
        },
    )  # a place, not a setting: recorded, never pinned
    split: str = field(default="train", metadata={"help": "split (or list file) of the companions"})
    labels: str = field(
        default="auto", metadata={"help": "image-level labels of the companions: xml, auto or a cls_labels.npy path"}
    )
    seed: int = field(
        default=0, metadata={"help": "global seed; an image's companions depend on (seed, image id) only"}
    )
    crop: int = field(default=128, metadata={"help": "companion crop size (as in classifier training)"})
    scale_min: float = field(default=0.75, metadata={"help": "companion random rescale, lower bound"})
    scale_max: float = field(default=1.25, metadata={"help": "companion random rescale, upper bound"})
    margin_mode: str = field(
        default="clamp",
        metadata={
            "help": "clamp: min(m, y) as in the text; stop: the authors' code, "
            "plain logits and stop once the image's summed target logits exceed m",
            "choices": ["clamp", "stop"],
        },
    )
    disjoint: bool = field(
        default=False, metadata={"help": "companions share no class with the image (the authors' code)"}
    )
    head_lr_mult: float = field(
        default=1.0, metadata={"help": "learning-rate multiplier of the classification layer (code: 10)"}
    )
    gndrp_mode: str = field(
        default="subset",
        metadata={
            "help": "subset: mean over U_tau (text); masked_mean: the code's "
            "masked raw CAM averaged over all locations",
            "choices": ["subset", "masked_mean"],
        },
    )

    name = "rib"

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch < 1 or self.crop < 8:
            raise ValueError("steps must be >= 0, batch >= 1 and crop >= 8")
        if (
            self.pooling not in ("gap", "gndrp")
            or self.margin_mode not in ("clamp", "stop")
            or self.gndrp_mode not in ("subset", "masked_mean")
        ):
            raise ValueError("pooling must be gap|gndrp, margin_mode clamp|stop, gndrp_mode subset|masked_mean")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")

    def adaptation(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = "", keep: str = "all"
    ) -> Iterator[CAMModel]:
        """theta_0..theta_K for this image, one at a time (theta_0 is `model` itself); keep="last": theta_K only.

        theta_1..theta_K are ONE copy of the model updated in place: each is valid until the next is asked for
        (use it, or copy it, first). The K iterations run on x [N,3,h,w] (the image and its flip) for the 0-based
        classes; the caller's model is never modified.
        """
        if keep not in ("all", "last"):
            raise ValueError(f"keep must be all or last, got {keep!r}")
        pool = companion_pool(self.data, self.split, self.labels)
        image_id = image_id_of(image_key)
        rng = np.random.default_rng([self.seed, stable_hash(image_id)])
        candidates = pool.candidates(image_id, classes.tolist() if self.disjoint else None)
        if keep == "all":
            yield model
        if self.steps == 0:
            if keep == "last":
                yield model
            return
        if pool.labels.shape[1] != model.num_classes:
            raise DataError(
                f"{self.data}: has {pool.labels.shape[1]} classes but the model has {model.num_classes} (--rib-data)"
            )
        work = copy.deepcopy(model).eval().requires_grad_(False)
        params = list(work.parameters())
        head_ids = {id(p) for p in work.classifier.parameters()}
        rates = [self.lr * (self.head_lr_mult if id(p) in head_ids else 1.0) for p in params]
        target = torch.zeros((len(x), work.num_classes), device=x.device, dtype=x.dtype)
        target[:, classes.to(x.device)] = 1.0
        for _ in range(self.steps):
            picks = rng.choice(len(candidates), size=self.batch - 1, replace=len(candidates) < self.batch - 1)
            images, labels = pool.batch(
                [str(candidates[i]) for i in picks], rng, self.crop, (self.scale_min, self.scale_max), x.device, x.dtype
            )
            work.requires_grad_(True)
            with torch.inference_mode(False), torch.enable_grad():
                own = self.pooled_logits(work, x)
                if self.margin_mode == "stop" and float((own.detach() * target).sum()) > self.margin:
                    break  # the code's margin: stop once the image's summed target logits exceed m
                loss = rib_loss(own, target, self.margin, self.margin_mode)
                if len(images):
                    loss = loss + rib_loss(self.pooled_logits(work, images), labels, self.margin, self.margin_mode)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            del own, loss, images, labels
            with torch.no_grad():
                for p, g, rate in zip(params, grads, rates, strict=True):
                    if g is not None:
                        p.sub_(rate * g)
            del grads
            work.requires_grad_(False)
            if keep == "all":
                yield work
        if keep == "last":
            yield work

    def check_inputs(self, num_classes: int) -> None:
        """Open the companion split (data, split, labels) and check it has num_classes classes and two images."""
        try:
            pool = companion_pool(self.data, self.split, self.labels)
        except DataError as e:
            raise DataError(f"RIB companions (--rib-data): {e}") from e
        if pool.labels.shape[1] != num_classes:
            raise DataError(
                f"{self.data}: has {pool.labels.shape[1]} classes but the model has {num_classes} (--rib-data)"
            )
        if len(pool.ids) < 2:
            raise DataError(
                f"{self.data}: split {self.split!r} has {len(pool.ids)} image(s); RIB needs companions (--rib-data)"
            )

    def adapt(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = "", keep: str = "all"
    ) -> list[CAMModel]:
        """theta_0..theta_K as separate models (a copy per step; keep="last": [theta_K]): for inspection, since
        the maps are computed from `adaptation`'s single copy."""
        return [
            m if m is model else copy.deepcopy(m)
            for m in self.adaptation(model, x, classes, image_key=image_key, keep=keep)
        ]

    def pooled_logits(self, model: CAMModel, x: torch.Tensor) -> torch.Tensor:
        """Logits [N,C] of a batch with this method's pooling (GAP or GNDRP) of the raw class maps."""
        _, cams = model.logits_and_cams(x)
        return gndrp(cams, self.tau, self.gndrp_mode) if self.pooling == "gndrp" else gap(cams)

    def trajectory_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """ReLU'd raw CAMs of every adapted model: [K+1, N, K_classes, h, w] (the K curve's partial sums)."""
        return torch.stack(
            [
                CAM().scale_maps(m, x, classes, image_key=image_key)
                for m in self.adaptation(model, x, classes, image_key=image_key)
            ]
        )

    def scale_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """sum_k CAM(x; theta_k): [N, K, h, w], adapting on x itself."""
        if len(classes) == 0:
            return CAM().scale_maps(model, x, classes)
        return Adapted(self, CAM(), at="every").scale_maps(model, x, classes, image_key=image_key)

    def multiscale_maps(
        self, model: CAMModel, batches: Sequence[torch.Tensor], classes: torch.Tensor, *, image_keys: Sequence[str]
    ) -> Iterator[torch.Tensor]:
        """sum_k CAM(x_s; theta_k) for every scale s, from one adaptation on the first scale's batch."""
        if len(classes) == 0:
            return super().multiscale_maps(model, batches, classes, image_keys=image_keys)
        return Adapted(self, CAM(), at="every").multiscale_maps(model, batches, classes, image_keys=image_keys)


def rib_loss(logits: torch.Tensor, targets: torch.Tensor, margin: float, mode: str = "clamp") -> torch.Tensor:
    """L_RIB = -sum_rows sum_c t_c min(m, y^c) (clamp), or -sum t_c y^c (the code's stop mode)."""
    capped = torch.clamp(logits, max=margin) if mode == "clamp" else logits
    return -(targets * capped).sum()


COMPANION_CACHE_BYTES = 64 * 2**20  # decoded companion images kept per pool (least recently used evicted first)
MAX_POOLS = 2  # companion pools (dataset splits) kept per process


class CompanionPool:
    """The training images RIB draws companions from: ids, multi-hot labels, and a bounded cache of decoded images.

    Decoded images are kept up to `cache_bytes` in all (least recently used evicted first), so a small training
    set is decoded once and a large one (VOC train_aug) costs at most that much memory per process.
    """

    def __init__(self, data: str, split: str, labels: str, cache_bytes: int = COMPANION_CACHE_BYTES) -> None:
        from weakseg.data.voc import VOCDataset

        if not data:
            raise WeaksegError(
                "rib needs the training set its companions come from: pass --rib-data "
                "(--rib-advcam-rib-data for rib-advcam), a VOC2012 folder"
            )
        self.dataset = VOCDataset(data, split, labels=labels)
        self.ids = np.asarray(self.dataset.ids)
        self.labels = np.stack([self.dataset.labels(i) for i in self.dataset.ids])
        self._row = {i: n for n, i in enumerate(self.dataset.ids)}
        self.cache_bytes = cache_bytes
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded images held now (never more than cache_bytes)."""
        return self._cached_bytes

    def image(self, image_id: str) -> np.ndarray:
        """A decoded companion (HxWx3 uint8), from the cache when it is there."""
        with self._lock:
            cached = self._images.get(image_id)
            if cached is not None:
                self._images.move_to_end(image_id)
                return cached
        decoded = self.dataset.image(image_id)
        with self._lock:
            if image_id not in self._images and decoded.nbytes <= self.cache_bytes:
                self._images[image_id] = decoded
                self._cached_bytes += decoded.nbytes
                while self._cached_bytes > self.cache_bytes:
                    _, old = self._images.popitem(last=False)
                    self._cached_bytes -= old.nbytes
        return decoded

    def candidates(self, image_id: str, disjoint_from: list[int] | None) -> np.ndarray:
        """Ids other than image_id (and, with disjoint_from, sharing none of those 0-based classes)."""
        ok = self.ids != image_id
        if disjoint_from:
            ok &= self.labels[:, disjoint_from].sum(axis=1) == 0
        if not ok.any():
            raise DataError(
                f"{self.dataset.root}: no companion image for {image_id!r} in split {self.dataset.split_path.name}"
            )
        return self.ids[ok]

    def batch(
        self,
        ids: list[str],
        rng: np.random.Generator,
        crop: int,
        scale_range: tuple[float, float],
        device: torch.device,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented companions [B,3,crop,crop] and their labels [B,C] (augmentation drawn from rng)."""
        from weakseg.data.augment import scale_flip_crop, to_tensor

        images, labels = [], []
        for i in ids:
            image, _ = scale_flip_crop(to_tensor(self.image(i)), rng, crop, scale_range)
            images.append(image)
            labels.append(torch.from_numpy(self.labels[self._row[i]]))
        if not images:
            return (
                torch.zeros((0, 3, crop, crop), device=device, dtype=dtype),
                torch.zeros((0, self.labels.shape[1]), device=device, dtype=dtype),
            )
        return torch.stack(images).to(device, dtype), torch.stack(labels).to(device, dtype)


_POOLS: OrderedDict[tuple[str, str, str], CompanionPool] = OrderedDict()
_POOLS_LOCK = threading.Lock()


def companion_pool(data: str, split: str, labels: str) -> CompanionPool:
    """The companion pool of a dataset split, shared in the process; at most MAX_POOLS are kept (least recent dropped)."""
    key = (str(Path(data).resolve()) if data else "", split, labels)
    with _POOLS_LOCK:
        if key in _POOLS:
            _POOLS.move_to_end(key)
            return _POOLS[key]
    pool = CompanionPool(data, split, labels)  # reads the split's labels: outside the lock
    with _POOLS_LOCK:
        pool = _POOLS.setdefault(key, pool)
        _POOLS.move_to_end(key)
        while len(_POOLS) > MAX_POOLS:
            _POOLS.popitem(last=False)
        return pool
