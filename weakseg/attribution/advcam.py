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

`variant="code"` follows the authors' public code instead: step code_xi * g / max|g| with the image clamped to
its original min/max, logits GAP(ReLU(CAM)), the regulariser on code_map_scale * ReLU(CAM) (their Grad-CAM
scale), the mask on the current map divided by its own maximum, maps summed over x^0..x^{T-1}, and at scale 0.5
half the steps with double weight (the scale is read from compute_maps' image_key suffix '@<scale>'). Their
coupling of the two flips through one flip-summed map is not reproduced: each flip is its own trajectory.

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


@dataclass(frozen=True)
class AdvCAM(AttributionMethod):
    """Adversarial climbing per class present, at every scale and flip of the inference."""

    steps: int = field(default=27, metadata={"help": "T: adversarial climbing steps (Eq. 3.5); 0 gives CAM"})
    xi: float = field(default=0.008, metadata={"help": "xi: step size of the text variant, in normalised-input units (Eq. 3.5)"})
    lam: float = field(default=7.0, metadata={"help": "lambda: weight of the restricting regulariser (Eq. 3.6); 0 switches it off"})
    tau: float = field(default=0.5, metadata={"help": "tau: threshold of the restricting mask M (Eq. 3.4)"})
    suppress_others: bool = field(default=True, metadata={"help": "subtract the logits of all other classes (Eq. 3.6)"})
    restrict: bool = field(default=True, metadata={"help": "apply the restricting-mask regulariser (Eq. 3.6)"})
    variant: str = field(default="text", metadata={"help": "text: the dissertation's equations; code: the authors' public code",
                                                    "choices": ["text", "code"]})
    code_xi: float = field(default=0.08, metadata={"help": "step size of the code variant (L-infinity-normalised gradient)"})
    code_map_scale: float = field(default=5e-4, metadata={"help": "code variant: scale of the map in the regulariser "
                                                                   "(their Grad-CAM normalisation)"})
    max_batch: int = field(default=16, metadata={"help": "most trajectories (classes x flips) climbed in one batch; "
                                                         "bounds memory, does not change the maps"})

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

    def config(self) -> dict:
        """The configuration without execution settings (max_batch does not change the maps)."""
        return {"method": self.name, **{k: v for k, v in asdict(self).items() if k != "max_batch"}}

    def schedule(self, image_key: str = "") -> tuple[int, float]:
        """(steps, weight of each map) at the scale named in image_key; only the code variant treats 0.5 apart."""
        if self.variant == "code" and scale_of(image_key) == 0.5:
            if self.steps > 10:
                return self.steps // 2, 2.0
            if self.steps >= 6:
                return 5, 1.0
        return self.steps, 1.0

    def trajectory_maps(self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = "") -> torch.Tensor:
        """ReLU'd raw CAMs along every trajectory: [S, N, K, h, w], S = T+1 (text) or T (code) recorded steps.

        scale_maps is the weighted sum over S; benchmarks read the T curve from the partial sums.
        """
        n, k = x.shape[0], len(classes)
        steps, _ = self.schedule(image_key)
        rows = x.repeat(k, 1, 1, 1)  # row r = class r // n, image r % n
        targets = classes.to(x.device).repeat_interleave(n)
        chunks = [climb(model, rows[i:i + self.max_batch], targets[i:i + self.max_batch], self, steps)
                  for i in range(0, len(rows), self.max_batch)]
        maps = torch.cat(chunks, dim=1)  # [S, K*N, h, w]
        return maps.view(maps.shape[0], k, n, *maps.shape[-2:]).transpose(1, 2)

    def scale_maps(self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = "") -> torch.Tensor:
        """sum_t CAM(x^t) per class and image: [N, K, h, w]."""
        if len(classes) == 0:
            with torch.no_grad():
                _, cams = model.logits_and_cams(x)
            return cams[:, :0]
        _, weight = self.schedule(image_key)
        return self.trajectory_maps(model, x, classes, image_key=image_key).sum(dim=0) * weight


def input_normalization(model: CAMModel, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) [1,3,1,1] of the model's input normalisation (identity when it has none)."""
    norm = getattr(model, "normalize", None)
    if norm is None or not hasattr(norm, "mean"):
        zero = torch.zeros((1, 1, 1, 1), device=like.device, dtype=like.dtype)
        return zero, zero + 1
    return norm.mean.to(like.device), norm.std.to(like.device)


def climb_forward(model: CAMModel, z: torch.Tensor, targets: torch.Tensor, cfg: AdvCAM,
                  mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward on normalised inputs z [R,3,h,w]: (logits [R,C], raw CAM of each row's target [R,h',w'])."""
    logits, cams = model.logits_and_cams(z * std + mean)
    if cfg.variant == "code":
        logits = F.relu(cams).mean(dim=(2, 3))
    return logits, cams[torch.arange(len(targets), device=cams.device), targets]


def climb_objective(cfg: AdvCAM, logits: torch.Tensor, cam: torch.Tensor, targets: torch.Tensor,
                    ref: torch.Tensor, ref_max: torch.Tensor) -> torch.Tensor:
    """Eq. 3.6 per trajectory [R]: y_c - sum_{k != c} y_k - lambda * ||M (.) |CAM(x^{t-1}) - CAM(x^0)| ||_1.

    ref is ReLU(raw CAM(x^0)) [R,h,w] and ref_max its per-row maximum [R,1,1] (the text's fixed normaliser).
    """
    y_c = logits.gather(1, targets[:, None])[:, 0]
    objective = y_c - (logits.sum(dim=1) - y_c) if cfg.suppress_others else y_c
    if cfg.restrict and cfg.lam > 0:
        current = F.relu(cam)
        if cfg.variant == "text":
            mask = (current.detach() / ref_max) > cfg.tau
            gap = (current - ref).abs() / ref_max
        else:
            own_max = current.detach().flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
            mask = (current.detach() / own_max) > cfg.tau
            gap = cfg.code_map_scale * (current - ref).abs()
        objective = objective - cfg.lam * (gap * mask).sum(dim=(1, 2))
    return objective


def climb_step(model: CAMModel, z: torch.Tensor, targets: torch.Tensor, cfg: AdvCAM, mean: torch.Tensor,
               std: torch.Tensor, ref: torch.Tensor | None = None, ref_max: torch.Tensor | None = None,
               bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of Eq. 3.5 for every row of z (normalised inputs [R,3,h,w]): one forward, one input-gradient backward.

    Returns (z^t, ReLU'd raw CAM of x^{t-1} [R,h',w'], ref, ref_max); ref/ref_max (the CAM of x^0 and its maximum)
    are taken from this forward when not given, i.e. at the first step. bounds = (lo, hi) clamp the code variant.
    """
    with torch.inference_mode(False), torch.enable_grad():
        z = z.detach().requires_grad_(True)
        logits, cam = climb_forward(model, z, targets, cfg, mean, std)
        current = F.relu(cam).detach()
        if ref is None:
            ref = current
            ref_max = ref.flatten(1).amax(dim=1).clamp_min(1e-5)[:, None, None]
        objective = climb_objective(cfg, logits, cam, targets, ref, ref_max)
        (grad,) = torch.autograd.grad(objective.sum(), z)
    with torch.no_grad():
        if cfg.variant == "text":
            z = z + cfg.xi * grad
        else:
            peak = grad.abs().amax(dim=(1, 2, 3), keepdim=True) + 1e-12
            z = z + cfg.code_xi * grad / peak
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
