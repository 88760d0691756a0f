"""AdvCAM (dissertation 3.3, Eqs. 3.2-3.6): anti-adversarial climbing of the image, CAMs summed over the steps.

Per target class c, starting from x^0: x^t = x^{t-1} + xi * grad_x L with
    L = y_c - sum_{k != c} y_k - lambda * || M (.) |CAM(x^{t-1}) - CAM(x^0)| ||_1,   M = 1(CAM(x^{t-1}) > tau),
and the map is sum_{t=0..T} CAM(x^t) (max-normalised by compute_maps, Eq. 3.3).

Conventions of the text variant (the default):
- x is the network's normalised input (the authors' images are ImageNet-normalised, so xi = 0.008 is in those
  units); our models take [0,1] RGB and normalise inside, so the climb runs on z = (x - mean) / std.
- CAM(x^t) in the mask and the regulariser is the ReLU'd class map divided by the maximum of CAM(x^0) of the
  same trajectory (Eq. 2.1's normalisation, held fixed along the trajectory so the regulariser has one scale).
- y are the classifier logits (GAP of the raw CAMs); the suppression sums over every class but c.

`variant="code"` follows the authors' public code instead: step code_xi * g / max|g| with the image clamped
(to x^0's min/max by default, `code_clamp="current"` for theirs: the current image's), logits GAP(ReLU(CAM)),
the mask on the current map divided by its own maximum, maps summed over x^0..x^{T-1}, and at scale 0.5 half the
steps (T > 10; 5 steps for 6 <= T <= 10) at the same weight as every other scale (their `mul_for_scale` is set in
the 0.5 branch, which runs first, and carries over to every scale). The regulariser acts on their Grad-CAM map:
their `gap2d_pos` divides the summed gradients by the count of positive gradient entries, which for a bias-free 1x1
head makes the map ReLU(CAM_c) * P_b / (K+_c * sum_b P_b), P_b the positive cells of image b and K+_c the number
of positive weights in class c's row of the head. Each trajectory here is its own batch (P_b / sum P = 1), so the
scale is 1 / K+_c, read from the model's head (`code_map_scale=None`, the default) or fixed by `code_map_scale`.
Their coupling of the two flips through one flip-summed map is not reproduced: each flip is its own trajectory.

Cost: every step is one forward (giving logits and CAMs together) and one backward to the input only; no
parameter gradient is computed or stored. The trajectories of one scale (classes x flips) form one batch,
split into chunks of at most max_batch rows; scales are looped by compute_maps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from weakseg.attribution.base import AttributionMethod
from weakseg.attribution.keys import scale_of
from weakseg.models.contract import CAMModel

CODE_ONLY = ("code_xi", "code_map_scale", "code_clamp")  # fields only the code variant reads
TEXT_ONLY = ("xi", "restrict_scale")  # fields only the text variant reads


@dataclass(frozen=True)
class AdvCAM(AttributionMethod):
    """Adversarial climbing per class present, at every scale and flip of the inference."""

    steps: int = field(default=27, metadata={"help": "T: adversarial climbing steps (Eq. 3.5); 0 gives CAM"})
    xi: float = field(
        default=0.008, metadata={"help": "xi: step size of the text variant, in normalised-input units (Eq. 3.5)"}
    )
    lam: float = field(
        default=7.0, metadata={"help": "lambda: weight of the restricting regulariser (Eq. 3.6); 0 switches it off"}
    )
    tau: float = field(default=0.5, metadata={"help": "tau: threshold of the restricting mask M (Eq. 3.4)"})
    suppress_others: bool = field(default=True, metadata={"help": "subtract the logits of all other classes (Eq. 3.6)"})
    restrict: bool = field(default=True, metadata={"help": "apply the restricting-mask regulariser (Eq. 3.6)"})
    restrict_scale: str = field(
        default="logit",
        metadata={
            "help": "text variant: units of the restricting term. max: the sum over M of the max-normalised maps "
            "(Eq. 3.6 with Eq. 2.1's CAM); logit: its mean over all cells in raw-CAM units, the units of the GAP "
            "logit y_c, so each masked cell weighs lambda times what it weighs in y_c at any resolution or CAM scale",
            "choices": ["max", "logit"],
        },
    )
    variant: str = field(
        default="text",
        metadata={
            "help": "text: the dissertation's equations; code: the authors' public code",
            "choices": ["text", "code"],
        },
    )
    code_xi: float = field(
        default=0.08, metadata={"help": "step size of the code variant (L-infinity-normalised gradient)"}
    )
    code_map_scale: float | None = field(
        default=None,
        metadata={
            "help": "code variant: scale of the map in the regulariser; 'head' (default) = 1/K+_c, their Grad-CAM "
            "normalisation computed from the head's positive weights per class; or a fixed number",
            "parse": lambda s: None if s.lower() in ("head", "none") else float(s),
            "metavar": "head|SCALE",
        },
    )
    code_clamp: str = field(
        default="initial",
        metadata={
            "help": "code variant: clamp every step to the bounds of x^0 "
            "(initial) or of the current image (current, theirs)",
            "choices": ["initial", "current"],
        },
    )
    max_batch: int = field(
        default=16,
        metadata={
            "help": "most trajectories (classes x flips) climbed in one batch; bounds memory, does not change the maps"
        },
    )

    name = "advcam"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.variant not in ("text", "code"):
            raise ValueError(f"variant must be text or code, got {self.variant!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.xi < 0 or self.code_xi < 0 or self.lam < 0:
            raise ValueError("xi, code_xi and lam must be >= 0")
        if self.code_map_scale is not None and not self.code_map_scale > 0:
            raise ValueError(f"code_map_scale must be > 0 (or None for the head's 1/K+_c), got {self.code_map_scale}")
        if self.restrict_scale not in ("max", "logit"):
            raise ValueError(f"restrict_scale must be max or logit, got {self.restrict_scale!r}")
        if self.code_clamp not in ("initial", "current"):
            raise ValueError(f"code_clamp must be initial or current, got {self.code_clamp!r}")

    def config(self) -> dict:
        """The configuration that determines the maps: no execution settings (max_batch), no other variant's fields."""
        unused = {"max_batch", *(CODE_ONLY if self.variant == "text" else TEXT_ONLY)}
        return {"method": self.name, **{k: v for k, v in asdict(self).items() if k not in unused}}

    def schedule(self, image_key: str = "") -> tuple[int, float]:
        """(steps, weight of each map) at the scale named in image_key; only the code variant treats 0.5 apart.

        The weight is 1 at every scale: theirs is 2 at every scale once T > 10, which the max-normalisation removes.
        """
        if self.variant == "code" and scale_of(image_key) == 0.5 and self.steps >= 6:
            return (self.steps // 2 if self.steps > 10 else 5), 1.0
        return self.steps, 1.0

    def trajectory_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """ReLU'd raw CAMs along every trajectory: [S, N, K, h, w], S = T+1 (text) or T (code) recorded steps.

        scale_maps is the weighted sum over S; benchmarks read the T curve from the partial sums.
        """
        n, k = x.shape[0], len(classes)
        steps, _ = self.schedule(image_key)
        rows = x.repeat(k, 1, 1, 1)  # row r = class r // n, image r % n
        targets = classes.to(x.device).repeat_interleave(n)
        chunks = [
            climb(model, rows[i : i + self.max_batch], targets[i : i + self.max_batch], self, steps)
            for i in range(0, len(rows), self.max_batch)
        ]
        maps = torch.cat(chunks, dim=1)  # [S, K*N, h, w]
        return maps.view(maps.shape[0], k, n, *maps.shape[-2:]).transpose(1, 2)

    def scale_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """sum_t CAM(x^t) per class and image: [N, K, h, w]."""
        if len(classes) == 0:
            with torch.no_grad():
                _, cams = model.logits_and_cams(x)
            return cams[:, :0]
        _, weight = self.schedule(image_key)
        return self.trajectory_maps(model, x, classes, image_key=image_key).sum(dim=0) * weight


def input_normalization(model: CAMModel, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) [1,3,1,1] of the model's input normalisation, on like's device."""
    return model.normalize.mean.to(like.device), model.normalize.std.to(like.device)


def climb_forward(
    model: CAMModel, z: torch.Tensor, targets: torch.Tensor, cfg: AdvCAM, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward on normalised inputs z [R,3,h,w]: (logits [R,C], raw CAM of each row's target [R,h',w'])."""
    logits, cams = model.logits_and_cams(z * std + mean)
    if cfg.variant == "code":
        logits = F.relu(cams).mean(dim=(2, 3))
    return logits, cams[torch.arange(len(targets), device=cams.device), targets]


def head_positive_counts(model: CAMModel) -> torch.Tensor:
    """K+_c [C]: the number of positive weights in each class row of the model's bias-free 1x1 head."""
    weight = model.classifier.weight if isinstance(model.classifier, nn.Conv2d) else None
    if weight is None or weight.shape[2:] != (1, 1):
        raise ValueError(
            "AdvCAM's code variant takes its map scale from a 1x1 classification head (model.classifier); "
            f"this model's head is {type(model.classifier).__name__}: pass code_map_scale=<number>"
        )
    return (weight.detach().flatten(1) > 0).sum(dim=1)


def code_scales(cfg: AdvCAM, model: CAMModel, targets: torch.Tensor) -> torch.Tensor:
    """Per-row scale [R,1,1] of the code variant's regularised map: 1/K+_c (their gap2d_pos) or the fixed value."""
    if cfg.code_map_scale is not None:
        return torch.full((len(targets), 1, 1), cfg.code_map_scale, device=targets.device)
    counts = head_positive_counts(model).to(targets.device)[targets].clamp_min(1)
    return (1.0 / counts.float())[:, None, None]


def climb_objective(
    cfg: AdvCAM,
    logits: torch.Tensor,
    cam: torch.Tensor,
    targets: torch.Tensor,
    ref: torch.Tensor,
    ref_max: torch.Tensor,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 3.6 per trajectory [R]: y_c - sum_{k != c} y_k - lambda * ||M (.) |CAM(x^{t-1}) - CAM(x^0)| ||_1.

    ref is ReLU(raw CAM(x^0)) [R,h,w] and ref_max its per-row maximum [R,1,1] (the text's fixed normaliser);
    scale [R,1,1] is the code variant's map scale (code_scales). With restrict_scale="logit" the text variant's
    term is lambda * mean_cells(M (.) |CAM(x^{t-1}) - CAM(x^0)|) on raw CAMs: y_c is the mean of the raw CAM, so a
    masked cell's gradient is lambda times the one it gets from y_c (the "max" form's ratio is lambda * h * w /
    max CAM(x^0), which grows with the feature map and shrinks with the network's CAM scale).
    """
    y_c = logits.gather(1, targets[:, None])[:, 0]
    objective = y_c - (logits.sum(dim=1) - y_c) if cfg.suppress_others else y_c
    if cfg.restrict and cfg.lam > 0:
        current = F.relu(cam)
        if cfg.variant == "text":
            mask = (current.detach() / ref_max) > cfg.tau
            if cfg.restrict_scale == "logit":
                gap = (current - ref).abs() / (current.shape[-1] * current.shape[-2])
            else:
                gap = (current - ref).abs() / ref_max
        else:
            own_max = current.detach().flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
            mask = (current.detach() / own_max) > cfg.tau
            if scale is None:
                raise ValueError("the code variant's regulariser needs its map scale (code_scales)")
            gap = scale * (current - ref).abs()
        objective = objective - cfg.lam * (gap * mask).sum(dim=(1, 2))
    return objective


def climb_step(
    model: CAMModel,
    z: torch.Tensor,
    targets: torch.Tensor,
    cfg: AdvCAM,
    mean: torch.Tensor,
    std: torch.Tensor,
    ref: torch.Tensor | None = None,
    ref_max: torch.Tensor | None = None,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of Eq. 3.5 for every row of z (normalised inputs [R,3,h,w]): one forward, one input-gradient backward.

    Returns (z^t, ReLU'd raw CAM of x^{t-1} [R,h',w'], ref, ref_max); ref/ref_max (the CAM of x^0 and its maximum)
    are taken from this forward when not given, i.e. at the first step. bounds = (lo, hi) clamp the code variant
    (x^0's; with code_clamp="current" the bounds of this step's input are used instead).
    """
    with torch.inference_mode(False), torch.enable_grad():
        z = z.detach().requires_grad_(True)
        logits, cam = climb_forward(model, z, targets, cfg, mean, std)
        current = F.relu(cam).detach()
        if ref is None or ref_max is None:
            ref = current
            ref_max = ref.flatten(1).amax(dim=1).clamp_min(1e-5)[:, None, None]
        scale = code_scales(cfg, model, targets) if cfg.variant == "code" else None
        objective = climb_objective(cfg, logits, cam, targets, ref, ref_max, scale)
        (grad,) = torch.autograd.grad(objective.sum(), z)
    with torch.no_grad():
        z_in = z.detach()
        if cfg.variant == "text":
            z = z + cfg.xi * grad
        else:
            peak = grad.abs().amax(dim=(1, 2, 3), keepdim=True) + 1e-12
            z = z + cfg.code_xi * grad / peak
            if cfg.code_clamp == "current":
                bounds = (z_in.amin(dim=(1, 2, 3), keepdim=True), z_in.amax(dim=(1, 2, 3), keepdim=True))
            if bounds is not None:
                z = torch.maximum(torch.minimum(z, bounds[1]), bounds[0])
    return z.detach(), current, ref, ref_max


def climb(model: CAMModel, x: torch.Tensor, targets: torch.Tensor, cfg: AdvCAM, steps: int) -> torch.Tensor:
    """Climb every row of x [R,3,h,w] ([0,1] RGB) for its target class; ReLU'd raw CAMs [S,R,h',w'] per recorded step."""
    mean, std = input_normalization(model, x)
    with torch.inference_mode(False):
        z = (x.detach().clone() - mean) / std
    bounds = (z.amin(dim=(1, 2, 3), keepdim=True), z.amax(dim=(1, 2, 3), keepdim=True))
    recorded: list[torch.Tensor] = []
    ref = ref_max = None
    for _ in range(steps):
        z, current, ref, ref_max = climb_step(model, z, targets, cfg, mean, std, ref, ref_max, bounds)
        recorded.append(current)
    if cfg.variant == "text" or steps == 0:
        with torch.no_grad():
            _, cam = climb_forward(model, z, targets, cfg, mean, std)
        recorded.append(F.relu(cam))
    return torch.stack(recorded)
