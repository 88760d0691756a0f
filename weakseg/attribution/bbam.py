"""BBAM, the bounding box attribution map (dissertation 5.3.2, Eqs. 5.1-5.3), for torchvision Faster R-CNN detectors.

For every box target (a box and its class c) of an image, the smallest mask M in [0,1] whose perturbed image
Phi(I, M) = I * up(M) + mu * (1 - up(M)) makes the detector's two heads answer as they do on I, for a set O+ of
positive proposals around the box:

    M* = argmin_M  lambda ||M||_1 + tv_weight TV(M)
                   + E_{o in O+} [ 1_box |t^c(I, o) - t^c(Phi, o)|_1 / 2 + 1_cls |p^c(I, o) - p^c(Phi, o)| / 2 ].

What follows the authors' code (jbeomlee93/BBAM, tools/BBAM/BBAM_training_images_multi.py and data_utils.py), where
the text leaves it open:
- Proposals: `proposals` (1000) per box, each coordinate moved by u * side, u ~ U(-jitter, jitter) (x by the box
  width, y by its height), clipped to the image; drawn from a torch.Generator seeded by `seed`, all boxes' at once.
- Positives: proposals whose predicted class (argmax of the logits, background included) is c and whose regressed
  box for c has IoU > t with the box. The cascade is the code's: for t in (0.9, 0.85, 0.8), the first threshold with
  more than max_positives (100) proposals gives the first 100 of them (proposal order, i.e. a random subset);
  when none has that many, the last threshold's set (all of it, <= 100) is taken. IoU here is on float boxes
  (theirs truncates the coordinates to integers). A box without positives gets an all-zero map, as theirs.
- t^c is the box predictor's raw output for class c: the box coder's encoding (dx, dy, dw, dh) of the regressed
  box relative to the proposal, weights (10, 10, 5, 5) in both maskrcnn-benchmark and torchvision, so centre
  shifts count in tenths of the proposal's side and size changes in fifths of log units; |.|_1 is the mean over
  the four coordinates. p^c is the softmax probability (over all classes, background included) of class c.
- mu is the detector's normalisation mean (model.transform.image_mean, the per-channel mean of the data it was
  trained for): their 'constant' masking multiplies the mean-subtracted input by up(M), which is this Phi.
  Their 'blur' option (the image blurred with an 11x11 Gaussian of sigma 5 as mu) is `baseline="blur"` here,
  blurred at the detector's input size.
- M lives on a grid of floor(h/s) x floor(w/s) cells (at least 1; the text writes ceil) over the detector's input
  (resized) image h x w, s = 16 + 48 sqrt(a), a = the given box's area over the image's (the text: the predicted
  box's). up() is bilinear with aligned corners (their UpsamplingBilinear2d). The map returned is up(M) at the
  original image size, in [0, 1] (not rescaled).
- Initialisation (`union_init`): M = 1 on the cells covered by the positives' regressed boxes (coordinates / s,
  truncated), 0 elsewhere; without it M = 1 everywhere.
- Adam (lr 0.02) for 300 iterations, M clamped to [0, 1] after each step; TV(M) = sum |dM|^3 over vertical,
  horizontal and diagonal neighbours, the two diagonals counted twice (their tv_norm with diagonal=True, sum=True,
  beta 3); lambda 0.007, tv_weight 1e-4 (BBAM_training_images_multi.py).

Batching (not theirs: they optimise one object at a time, batched over its positives): the perturbed images of all
the boxes of an image (each box has its own mask) form one batch through the backbone, and each box's positives are
RoI-pooled from its own image, so an iteration is one forward and one backward for every box at once. The detector is
in eval mode (BatchNorm on running statistics), so the boxes do not interact and the maps equal the one-at-a-time
ones (`batch_objects=False`, `bbam_one_at_a_time`) up to floating-point rounding. Parameter gradients are off
(requires_grad False during the call; the caller's flags and train/eval modes are restored).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weakseg.data.box_targets import BoxError, check_box_targets

STRIDE_RULES = ("adaptive", "fixed")
BASELINES = ("mean", "blur")
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # the authors' cv2.GaussianBlur((11, 11), 5) for the blur baseline
EXECUTION_ONLY = ("batch_objects", "max_batch")  # fields that do not change the maps


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


@dataclass(frozen=True)
class BBAM:
    """Bounding box attribution maps of a Faster R-CNN detector, one per box target."""

    proposals: int = field(default=1000, metadata={"help": "jittered proposals drawn around each box"})
    jitter: float = field(
        default=0.3, metadata={"help": "each proposal coordinate moves by up to +-jitter x the box side (< 0.5)"}
    )
    iou_cascade: tuple[float, ...] = field(
        default=(0.9, 0.85, 0.8),
        metadata={
            "help": "IoU thresholds of the positives, tried in order: the first with more than max-positives "
            "proposals is used (its first max-positives), else the last one's",
            "parse": _floats,
            "metavar": "T1,T2,...",
        },
    )
    max_positives: int = field(default=100, metadata={"help": "most positive proposals per box"})
    stride: str = field(
        default="adaptive",
        metadata={
            "help": "mask stride rule: adaptive s = stride-base + stride-scale * sqrt(box area / image area), "
            "or fixed (fixed-stride)",
            "choices": list(STRIDE_RULES),
        },
    )
    fixed_stride: float = field(default=32.0, metadata={"help": "the stride of the fixed rule (input pixels)"})
    stride_base: float = field(default=16.0, metadata={"help": "adaptive stride: s at a vanishing box"})
    stride_scale: float = field(default=48.0, metadata={"help": "adaptive stride: slope in sqrt(area ratio)"})
    lr: float = field(default=0.02, metadata={"help": "Adam learning rate of the mask"})
    iterations: int = field(default=300, metadata={"help": "Adam steps"})
    lam: float = field(default=0.007, metadata={"help": "lambda: weight of ||M||_1 (Eq. 5.1)"})
    tv_weight: float = field(default=1e-4, metadata={"help": "weight of the total variation of M; 0 switches it off"})
    tv_beta: float = field(default=3.0, metadata={"help": "exponent of the total variation's differences"})
    use_box_head: bool = field(default=True, metadata={"help": "1_box: the box head's term (Eq. 5.3)"})
    use_class_head: bool = field(default=True, metadata={"help": "1_cls: the class head's term (Eq. 5.3)"})
    union_init: bool = field(
        default=True, metadata={"help": "start M at 1 on the positives' regressed boxes, 0 elsewhere (else 1)"}
    )
    baseline: str = field(
        default="mean",
        metadata={
            "help": "mu of the perturbation: the detector's normalisation mean, or the blurred image",
            "choices": list(BASELINES),
        },
    )
    batch_objects: bool = field(
        default=True,
        metadata={"help": "optimise all the boxes of an image in one batch (else one at a time); same maps"},
    )
    max_batch: int = field(
        default=0, metadata={"help": "most boxes per batch (0: all the boxes of the image); same maps"}
    )

    name = "bbam"

    def __post_init__(self) -> None:
        if self.proposals < 1 or self.max_positives < 1 or self.iterations < 0 or self.max_batch < 0:
            raise ValueError("proposals and max_positives must be >= 1, iterations and max_batch >= 0")
        if not 0 <= self.jitter < 0.5:
            raise ValueError(f"jitter must be in [0, 0.5) so that a proposal keeps a positive size, got {self.jitter}")
        if not self.iou_cascade or not all(0 <= t < 1 for t in self.iou_cascade):
            raise ValueError(f"iou_cascade needs thresholds in [0, 1), got {self.iou_cascade}")
        if self.stride not in STRIDE_RULES:
            raise ValueError(f"stride must be one of {STRIDE_RULES}, got {self.stride!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if not (self.fixed_stride > 0 and self.stride_base > 0 and self.stride_scale >= 0):
            raise ValueError("fixed_stride and stride_base must be > 0, stride_scale >= 0")
        if self.lr <= 0 or self.lam < 0 or self.tv_weight < 0 or self.tv_beta < 1:
            raise ValueError("lr must be > 0, lam and tv_weight >= 0, tv_beta >= 1")
        if not (self.use_box_head or self.use_class_head):
            raise ValueError("at least one of use_box_head and use_class_head must be on")

    def config(self) -> dict:
        """The configuration that determines the maps (recorded in manifests): no execution settings."""
        d = {k: v for k, v in asdict(self).items() if k not in EXECUTION_ONLY}
        d["iou_cascade"] = list(self.iou_cascade)
        return {"method": self.name, **d}

    def mask_stride(self, box_area: float, image_area: float) -> float:
        """The stride s of a box's mask grid, in detector-input pixels."""
        if self.stride == "fixed":
            return self.fixed_stride
        return adaptive_stride(box_area, image_area, self.stride_base, self.stride_scale)

    def box_maps(
        self, detector: nn.Module, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, seed: int = 0
    ) -> torch.Tensor:
        """Maps [B, H, W] in [0, 1], one per box (xyxy, 0-based pixel edges) and class id (1-based)."""
        return self.run(detector, image, boxes, labels, seed).maps

    def run(
        self, detector: nn.Module, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, seed: int = 0
    ) -> BBAMResult:
        """The maps with what produced them (grids, positives, thresholds, strides); see box_maps."""
        _require_faster_rcnn(detector)
        image = _check_image(image)
        height, width = image.shape[-2:]
        boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu()
        labels = torch.as_tensor(labels).detach().cpu()
        check_box_targets(boxes, labels, height, width, _num_classes(detector))
        device = _device(detector)
        with frozen_eval(detector), torch.enable_grad():
            prep = _prepare(detector, image.to(device), self.baseline)
            generator = torch.Generator().manual_seed(int(seed))
            proposals = jitter_proposals(boxes, self.proposals, self.jitter, height, width, generator)
            scale = torch.tensor([prep.ratio_w, prep.ratio_h, prep.ratio_w, prep.ratio_h], dtype=torch.float32)
            targets = [
                _Target(
                    index=i,
                    label=int(labels[i]),
                    box=(boxes[i] * scale).to(device),
                    proposals=(proposals[i].float() * scale).to(device),
                    stride=self.mask_stride(float(_area(boxes[i])), float(height * width)),
                )
                for i in range(len(boxes))
            ]
            size = (self.max_batch or len(targets)) if self.batch_objects else 1
            for start in range(0, len(targets), size):
                chunk = targets[start : start + size]
                self._select(detector, prep, chunk)
                self._optimise(detector, prep, [t for t in chunk if t.grid is not None])
        grids = [t.grid.detach() if t.grid is not None else torch.zeros(1, 1, device=device) for t in targets]
        maps = torch.stack([_upsample(g, (height, width)) for g in grids]).clamp(0, 1).to(image.device)
        return BBAMResult(
            maps=maps,
            grids=grids,
            positives=[t.num_positives for t in targets],
            iou_thresholds=[t.iou_threshold for t in targets],
            strides=[t.stride for t in targets],
            losses=[t.losses for t in targets],
        )

    def _select(self, detector: Any, prep: _Prepared, targets: list[_Target]) -> None:
        """The unperturbed pass: each target's positives, their reference outputs and the initial mask grid."""
        with torch.no_grad():
            features = _features(detector, prep.batch(prep.x[None]))
            for t in targets:
                logits, deltas = _heads(detector, features, [t.proposals], prep.size)
                if t.label >= logits.shape[1]:  # a predictor without cls_score: checked on its output
                    raise BoxError(
                        f"box {t.index}: class id {t.label} is not in the detector (classes 1..{logits.shape[1] - 1})"
                    )
                regressed = detector.roi_heads.box_coder.decode(deltas, [t.proposals])[:, t.label]
                idx, threshold = select_positives(
                    logits.argmax(1), regressed, t.box, t.label, self.iou_cascade, self.max_positives
                )
                t.num_positives, t.iou_threshold = len(idx), threshold
                if len(idx) == 0:
                    continue
                t.proposals = t.proposals[idx]
                t.ref_prob = logits[idx].softmax(1)[:, t.label]
                t.ref_deltas = _class_deltas(deltas[idx], t.label)
                grid_hw = (max(1, int(prep.size[0] / t.stride)), max(1, int(prep.size[1] / t.stride)))
                if self.union_init:
                    t.grid = union_grid(regressed[idx], t.stride, grid_hw)
                else:
                    t.grid = torch.ones(grid_hw, device=prep.x.device)

    def _optimise(self, detector: Any, prep: _Prepared, targets: list[_Target]) -> None:
        """Adam on the masks of targets, all perturbed images in one batch per step."""
        if not targets or self.iterations == 0:
            return
        grids = [t.grid.clone().requires_grad_(True) for t in targets if t.grid is not None]
        optimizer = torch.optim.Adam(grids, lr=self.lr)
        history: list[torch.Tensor] = []
        for _ in range(self.iterations):
            losses = self.losses(detector, prep, targets, grids)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            history.append(losses.detach())
            with torch.no_grad():
                for g in grids:
                    g.clamp_(0, 1)
        per_target = torch.stack(history, 1).cpu().tolist()  # one transfer at the end, not one per step
        for t, g, curve in zip(targets, grids, per_target, strict=True):
            t.grid = g.detach()
            t.losses = curve

    def losses(
        self, detector: Any, prep: _Prepared, targets: Sequence[_Target], grids: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Eq. 5.1 with Eq. 5.3 (the code's halves) per target [T], each target on its own perturbed image."""
        ups = [_upsample(g, prep.size)[None] for g in grids]
        x = torch.stack([perturb(prep.x, up, prep.base) for up in ups])
        features = _features(detector, prep.batch(x))
        logits, deltas = _heads(detector, features, [t.proposals for t in targets], prep.size)
        out = []
        offset = 0
        for t, g in zip(targets, grids, strict=True):
            assert t.ref_deltas is not None and t.ref_prob is not None, "targets without positives are not optimised"
            n = len(t.proposals)
            lg, dl = logits[offset : offset + n], deltas[offset : offset + n]
            offset += n
            term = lg.new_zeros(n)
            if self.use_box_head:
                term = term + (_class_deltas(dl, t.label) - t.ref_deltas).abs().mean(1) / 2
            if self.use_class_head:
                term = term + (lg.softmax(1)[:, t.label] - t.ref_prob).abs() / 2
            loss = term.mean() + self.lam * g.abs().sum()
            if self.tv_weight:
                loss = loss + self.tv_weight * tv_norm(g, self.tv_beta)
            out.append(loss)
        return torch.stack(out)


@dataclass(frozen=True)
class BBAMResult:
    """BBAM maps [B, H, W] and, per box, its optimised grid, positive count, IoU threshold used, stride, and loss
    before each Adam step (empty without positives)."""

    maps: torch.Tensor
    grids: list[torch.Tensor]
    positives: list[int]
    iou_thresholds: list[float | None]
    strides: list[float]
    losses: list[list[float]]


@dataclass
class _Target:
    """One box while it is optimised (detector-input coordinates)."""

    index: int  # in the caller's boxes
    label: int
    box: torch.Tensor
    proposals: torch.Tensor
    stride: float
    num_positives: int = 0
    iou_threshold: float | None = None
    ref_prob: torch.Tensor | None = None
    ref_deltas: torch.Tensor | None = None
    grid: torch.Tensor | None = None
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Prepared:
    """The image at the detector's input: normalised x [3,h,w], the normalised baseline, sizes and padding."""

    x: torch.Tensor
    base: torch.Tensor
    size: tuple[int, int]
    ratio_h: float
    ratio_w: float
    size_divisible: int

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad [N,3,h,w] to the detector's size divisibility (zero = the mean colour, as torchvision pads)."""
        h, w = x.shape[-2:]
        d = self.size_divisible
        return F.pad(x, (0, math.ceil(w / d) * d - w, 0, math.ceil(h / d) * d - h))


def bbam_one_at_a_time(
    method: BBAM, detector: nn.Module, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, seed: int = 0
) -> torch.Tensor:
    """The reference path: method's maps with each box optimised alone (the authors' loop), same proposals."""
    return replace(method, batch_objects=False).box_maps(detector, image, boxes, labels, seed)


def adaptive_stride(box_area: float, image_area: float, base: float = 16.0, scale: float = 48.0) -> float:
    """s(a) = base + scale * sqrt(a), a = box area / image area (Sec. 5.4.1: 16 + 48 sqrt(a))."""
    return base + scale * math.sqrt(max(0.0, box_area) / image_area)


def jitter_proposals(
    boxes: torch.Tensor, count: int, jitter: float, height: int, width: int, generator: torch.Generator
) -> torch.Tensor:
    """[B, count, 4] proposals: each coordinate of each box moved by U(-jitter, jitter) x its side, clipped."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64).cpu()
    u = torch.rand((len(boxes), count, 4), generator=generator, dtype=torch.float64) * (2 * jitter) - jitter
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    sides = torch.stack([w, h, w, h], dim=1)[:, None, :]
    out = boxes[:, None, :] + u * sides
    limits = torch.tensor([width, height, width, height], dtype=torch.float64)
    return torch.minimum(out.clamp_min(0), limits)


def select_positives(
    pred_classes: torch.Tensor,
    regressed: torch.Tensor,
    box: torch.Tensor,
    label: int,
    cascade: Sequence[float] = (0.9, 0.85, 0.8),
    max_positives: int = 100,
) -> tuple[torch.Tensor, float]:
    """Indices of the positive proposals and the threshold they came from (the authors' cascade, module docstring):
    predicted class == label and IoU(regressed box for label, box) > threshold."""
    from torchvision.ops import box_iou

    iou = box_iou(
        regressed.reshape(-1, 4).float(), torch.as_tensor(box, dtype=torch.float32).reshape(1, 4).to(regressed.device)
    )[:, 0]
    right = pred_classes.reshape(-1) == int(label)
    idx = torch.zeros(0, dtype=torch.long, device=regressed.device)
    threshold = float(cascade[-1])
    for threshold in (float(t) for t in cascade):
        idx = torch.nonzero(right & (iou > threshold)).flatten()
        if len(idx) > max_positives:
            return idx[:max_positives], threshold
    return idx, threshold


def perturb(image: torch.Tensor, mask: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Phi(I, M) = I * M + mu * (1 - M) for an upsampled mask M broadcasting over the channels."""
    return image * mask + baseline * (1 - mask)


def tv_norm(grid: torch.Tensor, beta: float = 3.0) -> torch.Tensor:
    """sum |dM|^beta over vertical, horizontal, and (each twice, as the authors') both diagonal neighbour pairs."""
    g = grid.reshape(grid.shape[-2:])
    vertical = (g[1:, :] - g[:-1, :]).abs().pow(beta).sum()
    horizontal = (g[:, 1:] - g[:, :-1]).abs().pow(beta).sum()
    diagonal = (g[1:, 1:] - g[:-1, :-1]).abs().pow(beta).sum()
    anti = (g[1:, :-1] - g[:-1, 1:]).abs().pow(beta).sum()
    return vertical + horizontal + 2 * diagonal + 2 * anti


def union_grid(boxes: torch.Tensor, stride: float, grid_hw: tuple[int, int]) -> torch.Tensor:
    """A grid of zeros with 1 on the cells [y1/s : y2/s, x1/s : x2/s] (truncated) of every box."""
    grid = torch.zeros(grid_hw, device=boxes.device)
    for x1, y1, x2, y2 in (boxes.detach().cpu().double() / stride).clamp_min(0).tolist():
        grid[int(y1) : int(y2), int(x1) : int(x2)] = 1
    return grid


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode without parameter gradients for the block; modes and requires_grad restored after."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def _require_faster_rcnn(detector: Any) -> None:
    needed = ("transform", "backbone", "roi_heads")
    heads = ("box_roi_pool", "box_head", "box_predictor", "box_coder")
    missing = [n for n in needed if not hasattr(detector, n)]
    missing += [f"roi_heads.{n}" for n in heads if "roi_heads" not in missing and not hasattr(detector.roi_heads, n)]
    if missing:
        raise TypeError(f"BBAM needs a torchvision Faster R-CNN; {type(detector).__name__} lacks {', '.join(missing)}")


def _num_classes(detector: Any) -> int | None:
    cls_score = getattr(detector.roi_heads.box_predictor, "cls_score", None)
    return int(cls_score.out_features) if isinstance(cls_score, nn.Linear) else None


def _device(detector: nn.Module) -> torch.device:
    for p in detector.parameters():
        return p.device
    return torch.device("cpu")


def _check_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"BBAM takes a float image [3, H, W] in [0, 1], got {getattr(image, 'shape', type(image))}")
    if image.numel() and (float(image.min()) < 0 or float(image.max()) > 1):
        raise ValueError("BBAM takes an image in [0, 1]")
    return image.float()


def _area(box: torch.Tensor) -> torch.Tensor:
    return (box[2] - box[0]) * (box[3] - box[1])


def _prepare(detector: Any, image: torch.Tensor, baseline: str) -> _Prepared:
    """The detector's own resize and normalisation of the image; the baseline mu in the same units."""
    images, _ = detector.transform([image])
    h, w = (int(v) for v in images.image_sizes[0])
    x = images.tensors[0, :, :h, :w]
    if baseline == "blur":
        from torchvision.transforms.functional import gaussian_blur

        mean = torch.as_tensor(detector.transform.image_mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.as_tensor(detector.transform.image_std, dtype=x.dtype, device=x.device)[:, None, None]
        blurred = gaussian_blur((x * std + mean).clamp(0, 1), [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
        base = (blurred - mean) / std
    else:
        base = torch.zeros_like(x)  # mu = the normalisation mean, 0 once normalised
    return _Prepared(
        x=x,
        base=base,
        size=(h, w),
        ratio_h=h / image.shape[-2],
        ratio_w=w / image.shape[-1],
        size_divisible=int(getattr(detector.transform, "size_divisible", 32)),
    )


def _features(detector: Any, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
    out = detector.backbone(x)
    return OrderedDict([("0", out)]) if isinstance(out, torch.Tensor) else out


def _heads(
    detector: Any,
    features: OrderedDict[str, torch.Tensor],
    proposals: list[torch.Tensor],
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits [N, C] and box deltas [N, 4C] of proposals[i] pooled from image i of the feature batch."""
    heads = detector.roi_heads
    pooled = heads.box_roi_pool(features, proposals, [size] * len(proposals))
    return heads.box_predictor(heads.box_head(pooled))


def _class_deltas(deltas: torch.Tensor, label: int) -> torch.Tensor:
    return deltas.reshape(len(deltas), -1, 4)[:, label]


def _upsample(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """up(M): bilinear with aligned corners to size, [h, w]."""
    return F.interpolate(grid[None, None], size=size, mode="bilinear", align_corners=True)[0, 0]
