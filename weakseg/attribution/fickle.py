"""FickleNet inference (dissertation 3.2.1): many stochastic localisation maps per image, aggregated into one.

The classifier must have a FickleHead (`weakseg train classifier --head fickle`). Per scale the backbone runs
once; its feature map is expanded once (Fig. 3.2) and only the head is resampled: each sample draws a
centre-fixed dropout mask on the expanded map (per window position by default, see weakseg.models.fickle_head)
and convolves with stride k, giving one class map per class.
Each sample's map is ReLU'd and divided by its maximum (Eq. 2.1).

Aggregation ("the pixels each map assigns to a class with a high score are collected into one map"):
- max (default): the per-pixel maximum over samples. Thresholding it at t gives exactly the union of the
  pixels the samples assign to the class at threshold t, so the seed threshold sweep also sweeps FickleNet's
  own threshold;
- vote: the fraction of samples whose map exceeds `threshold` at the pixel;
- mean: the average normalised map.
Masks come from a generator seeded with (seed, image key), so a map is reproducible and independent of
which worker computes it (on a given device type).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from weakseg.attribution.base import AttributionMethod
from weakseg.attribution.keys import stable_hash
from weakseg.errors import WeaksegError
from weakseg.models.contract import CAMModel
from weakseg.models.fickle_head import FickleHead, expand_windows

MASK_ELEMENTS_PER_CHUNK = 1 << 24  # bounds the memory of one batch of sampled masks (64 MiB in float32)


@dataclass(frozen=True)
class FickleNet(AttributionMethod):
    """Stochastic hidden-unit selection in the classifier's k x k head, many samples aggregated."""

    samples: int = field(default=200, metadata={"help": "stochastic maps per image and view (FickleNet paper: 200)"})
    aggregate: str = field(
        default="max",
        metadata={"help": "how the normalised sample maps become one map", "choices": ["max", "vote", "mean"]},
    )
    threshold: float = field(
        default=0.5, metadata={"help": "vote: a sample assigns a pixel to the class above this score"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the dropout masks (combined with the image key)"})
    mask: str = field(
        default="spatial",
        metadata={
            "help": "spatial: one draw per window position shared by all channels "
            "(as the head is trained); element: one per channel too",
            "choices": ["spatial", "element"],
        },
    )

    name = "fickle"

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.aggregate not in ("max", "vote", "mean"):
            raise ValueError(f"aggregate must be max, vote or mean, got {self.aggregate!r}")
        if self.mask not in ("spatial", "element"):
            raise ValueError(f"mask must be spatial or element, got {self.mask!r}")

    def config(self) -> dict:
        """The configuration (threshold only matters for vote, but is recorded as given)."""
        return {"method": self.name, **asdict(self)}

    def scale_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """Aggregated normalised sample maps [N, K, h, w] (the backbone runs once, the head `samples` times)."""
        head = model.classifier
        if not isinstance(head, FickleHead):
            raise WeaksegError(
                "fickle needs a classifier with a FickleNet head (train it with "
                "`weakseg train classifier --head fickle`); a 1x1 head has nothing to select from"
            )
        with torch.no_grad():
            feats = model.features(x)
            expanded = expand_windows(feats, head.kernel)  # [N, D, h*k, w*k]
            weight = head.weight[classes.to(head.weight.device)]
            n = expanded.shape[0]
            h, w = feats.shape[-2:]
            out = torch.zeros((n, len(classes), h, w), device=x.device, dtype=feats.dtype)
            if len(classes) == 0:
                return out
            generator = torch.Generator(device=x.device)
            generator.manual_seed(stable_hash(f"{self.seed}:{image_key}"))
            chunk = max(1, MASK_ELEMENTS_PER_CHUNK // expanded.numel())
            for start in range(0, self.samples, chunk):
                s = min(chunk, self.samples - start)
                mask = head.sample_mask((s * n, *expanded.shape[1:]), generator, x.device, self.mask).to(feats.dtype)
                selected = (expanded.unsqueeze(0) * mask.view(s, n, *mask.shape[1:])).flatten(0, 1)
                maps = F.relu(F.conv2d(selected, weight, stride=head.kernel)).view(s, n, len(classes), h, w)
                maps = maps / maps.flatten(3).amax(dim=3).clamp_min(1e-5)[..., None, None]
                if self.aggregate == "max":
                    out = torch.maximum(out, maps.amax(dim=0))
                elif self.aggregate == "vote":
                    out += (maps > self.threshold).to(out.dtype).sum(dim=0)
                else:
                    out += maps.sum(dim=0)
            if self.aggregate != "max":
                out /= self.samples
        return out
