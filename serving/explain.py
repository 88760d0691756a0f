"""Gradient attribution methods (Grad-CAM, AdvCAM) for the embedded backend, from the PyTorch checkpoint
exported beside a classifier's ONNX graph, within per-request cost limits.

Triton runs forward passes only, so these exist on the embedded backend alone. Maps are single scale
without flip (like the served CAM), not the multi-scale maps of `weakseg pseudo`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from serving.backends.base import ModelInfo, ServingError, invalid

GRADIENT_METHODS = ("gradcam", "advcam")


@dataclass(frozen=True)
class GradientLimits:
    """Per-request cost limits of gradient methods."""

    max_pixels: int = 512 * 512
    max_advcam_steps: int = 27
    default_advcam_steps: int = 27
    max_waiting: int = 4  # requests waiting for the gradient worker beyond the running one
    device: str = "cpu"


class GradientExplainer:
    """Runs Grad-CAM / AdvCAM one request at a time (they hold the model's autograd state), with a bounded wait."""

    def __init__(self, limits: GradientLimits = GradientLimits()) -> None:
        self.limits = limits
        self._models: dict[Path, object] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limits.max_waiting + 1)

    def _model(self, checkpoint: Path):
        from weakseg.models.classifier_io import load_classifier

        if checkpoint not in self._models:
            self._models[checkpoint], _ = load_classifier(checkpoint, self.limits.device)
        return self._models[checkpoint]

    def steps(self, requested: int) -> int:
        """AdvCAM steps for a request (0 = default), INVALID_ARGUMENT above the limit."""
        steps = requested or self.limits.default_advcam_steps
        if steps > self.limits.max_advcam_steps:
            raise invalid(f"advcam_steps {steps} exceeds this server's limit of {self.limits.max_advcam_steps}")
        return steps

    def explain(
        self,
        info: ModelInfo,
        method: str,
        image: np.ndarray,
        classes: list[int],
        steps: int = 0,
        timeout: float | None = None,
    ) -> np.ndarray:
        """Maps [K, H, W] in [0, 1] for 0-based class indices of a uint8 HxWx3 image."""
        import torch

        from weakseg.attribution import MultiScale, build_method, compute_maps

        if info.checkpoint is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {info.name!r} was exported without its PyTorch checkpoint; "
                f"gradient methods need {info.name}/checkpoint.safetensors in the repository",
            )
        h, w = image.shape[:2]
        if h * w > self.limits.max_pixels:
            raise invalid(f"image is {h}x{w}; gradient methods accept at most {self.limits.max_pixels} pixels here")
        params = {"steps": self.steps(steps)} if method == "advcam" else {}
        if not self._slots.acquire(blocking=False):
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "too many gradient explanations waiting; retry later"
            )
        try:
            if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed waiting for the gradient worker")
            try:
                model = self._model(info.checkpoint)
                device = next(model.parameters()).device
                x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0).to(device)
                maps = compute_maps(
                    build_method(method, **params), model, x, classes, MultiScale(scales=(1.0,), flip=False)
                )
                return maps.detach().cpu().numpy()
            finally:
                self._lock.release()
        finally:
            self._slots.release()
