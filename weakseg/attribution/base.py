"""The attribution interface every method implements, and its multi-scale / flip aggregation.

A method computes non-negative raw maps for a batch at one scale (`scale_maps`); `compute_maps` runs it
over scales and horizontal flips (through `multiscale_maps`, which a method sharing work across the scales
of one image overrides), resizes to the image, sums, and normalises each class map by its
maximum, returning maps in [0, 1] (Eq. 2.1 normalisation; the ReLU makes it well defined).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from weakseg.models.contract import CAMModel, require_cam_model


@dataclass(frozen=True)
class MultiScale:
    """Scales and flip of the inference (IRN's defaults)."""

    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True


class AttributionMethod(ABC):
    """A localisation-map method. Subclasses are frozen dataclasses whose fields are the hyper-parameters."""

    name: str = "abstract"

    @abstractmethod
    def scale_maps(
        self, model: CAMModel, x: torch.Tensor, classes: torch.Tensor, *, image_key: str = ""
    ) -> torch.Tensor:
        """Raw non-negative maps [N, K, h, w] for a batch x [N,3,h_in,w_in] and K class indices (0-based)."""

    def multiscale_maps(
        self, model: CAMModel, batches: Sequence[torch.Tensor], classes: torch.Tensor, *, image_keys: Sequence[str]
    ) -> Iterator[torch.Tensor]:
        """scale_maps of one image's batches at every scale (compute_maps' order), yielded one scale at a time.

        A method whose work is shared by the scales of an image (RIB adapts the weights once) overrides this.
        """
        for x, key in zip(batches, image_keys, strict=True):
            yield self.scale_maps(model, x, classes, image_key=key)

    def check_model(self, model: object) -> CAMModel:
        """The model when it implements the contract the method relies on (CAMModel); a clear TypeError otherwise."""
        return require_cam_model(model, f"method {self.name!r}")

    def check_inputs(self, num_classes: int) -> None:
        """Fail now (WeaksegError naming the file or flag) if the method's own inputs cannot serve a model with
        num_classes classes; a batch job calls it once before dispatching images. CAM-like methods read nothing else."""
        return None

    def config(self) -> dict:
        """The method's full configuration (recorded in manifests)."""
        return {"method": self.name, **asdict(self)}  # type: ignore[call-overload]  # subclasses are dataclasses; this ABC is not


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def compute_maps(
    method: AttributionMethod,
    model: CAMModel,
    image: torch.Tensor,
    classes: Sequence[int],
    multiscale: MultiScale = MultiScale(),
    *,
    image_key: str = "",
) -> torch.Tensor:
    """Maps [K, H, W] in [0, 1] for one image [3,H,W] (float RGB in [0,1]) and 0-based class indices.

    Per scale, the image and its flip form one batch; maps are flipped back, resized to the image,
    summed over scales and flips, and divided per class by their maximum. `image_key` seeds stochastic
    methods per image. A model the method cannot use (see AttributionMethod.check_model) is a TypeError.
    """
    method.check_model(model)
    H, W = image.shape[-2:]
    cls = torch.as_tensor(list(classes), dtype=torch.long, device=image.device)
    total = torch.zeros((len(cls), H, W), device=image.device, dtype=torch.float32)
    if len(cls) == 0:
        return total
    batches = []
    for s in multiscale.scales:
        size = (max(1, round(H * s)), max(1, round(W * s)))
        x = _resize(image[None], size) if size != (H, W) else image[None]
        batches.append(torch.cat([x, x.flip(-1)], dim=0) if multiscale.flip else x)
    keys = [f"{image_key}@{s}" for s in multiscale.scales]
    for raw in method.multiscale_maps(model, batches, cls, image_keys=keys):
        if multiscale.flip:
            raw = raw[:1] + raw[1:].flip(-1)
        total += _resize(raw.float(), (H, W))[0]
    total = F.relu(total)
    peak = total.flatten(1).amax(dim=1).clamp_min(1e-5)
    return total / peak[:, None, None]
