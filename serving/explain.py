"""Gradient attribution methods (Grad-CAM, AdvCAM; BBAM for detectors) for the embedded backend, from the PyTorch
checkpoint exported beside a model's ONNX graph, within per-request cost limits.

Triton runs forward passes only, so these exist on the embedded backend alone. Maps are single scale
without flip (like the served CAM), not the multi-scale maps of `weakseg pseudo`. BBAM (weakseg.attribution.bbam,
dissertation 5.3) fits one mask per box on the detector's box and class heads; a request names its boxes and may
lower the iterations and proposals below the server's limits (the authors' 300 iterations and 1000 proposals per
box are the limits' defaults; the default iterations are fewer, see GradientLimits).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from serving.backends.base import ModelInfo, ServingError, invalid

GRADIENT_METHODS = ("gradcam", "advcam")
BOX_METHODS = ("bbam",)  # detectors and instance segmenters


@dataclass(frozen=True)
class GradientLimits:
    """Per-request cost limits of gradient methods."""

    max_pixels: int = 512 * 512
    max_advcam_steps: int = 27
    default_advcam_steps: int = 27
    max_waiting: int = 4  # requests waiting for the gradient worker beyond the running one
    device: str = "cpu"
    max_bbam_iterations: int = 300  # the authors' count
    default_bbam_iterations: int = 100  # a third of it: 300 detector passes per request is a lot to ask by default
    max_bbam_proposals: int = 1000  # the authors' count per box
    default_bbam_proposals: int = 1000
    max_bbam_boxes: int = 8  # boxes per request (each one's positives go through the box head every iteration)


@dataclass(frozen=True)
class BoxMaps:
    """BBAM's answer for the boxes of a request: maps [B, H, W] in [0, 1], and per box its positive-proposal count
    and the IoU threshold of the cascade that gave them (None without positives)."""

    maps: np.ndarray
    positives: list[int]
    iou_thresholds: list[float | None]


class GradientExplainer:
    """Runs Grad-CAM / AdvCAM / BBAM one request at a time (they hold the model's autograd state), with a bounded
    wait."""

    def __init__(self, limits: GradientLimits = GradientLimits()) -> None:
        self.limits = limits
        self._models: dict[Path, object] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limits.max_waiting + 1)

    def _model(self, checkpoint: Path, kind: str = "classifier"):
        if checkpoint not in self._models:
            if kind == "detector":
                from weakseg.models.detector import load_detector

                self._models[checkpoint], _ = load_detector(checkpoint, self.limits.device)
            elif kind == "instance":
                from weakseg.models.instance import load_instance_model

                self._models[checkpoint], _ = load_instance_model(checkpoint, self.limits.device)
            else:
                from weakseg.models.classifier_io import load_classifier

                self._models[checkpoint], _ = load_classifier(checkpoint, self.limits.device)
        return self._models[checkpoint]

    def steps(self, requested: int) -> int:
        """AdvCAM steps for a request (0 = default), INVALID_ARGUMENT above the limit."""
        steps = requested or self.limits.default_advcam_steps
        if steps > self.limits.max_advcam_steps:
            raise invalid(f"advcam_steps {steps} exceeds this server's limit of {self.limits.max_advcam_steps}")
        return steps

    def bbam_settings(self, iterations: int, proposals: int, boxes: int) -> tuple[int, int]:
        """(iterations, proposals per box) of a BBAM request (0 = the defaults), INVALID_ARGUMENT above a limit or
        without boxes."""
        limits = self.limits
        if boxes == 0:
            raise invalid("method 'bbam' needs boxes: set ExplainRequest.boxes (a box and its class id each)")
        if boxes > limits.max_bbam_boxes:
            raise invalid(f"{boxes} boxes exceed this server's limit of {limits.max_bbam_boxes} boxes per bbam request")
        iterations = iterations or limits.default_bbam_iterations
        if iterations > limits.max_bbam_iterations:
            raise invalid(f"bbam_iterations {iterations} exceeds this server's limit of {limits.max_bbam_iterations}")
        proposals = proposals or limits.default_bbam_proposals
        if proposals > limits.max_bbam_proposals:
            raise invalid(f"bbam_proposals {proposals} exceeds this server's limit of {limits.max_bbam_proposals}")
        return iterations, proposals

    @staticmethod
    def check_boxes(boxes: np.ndarray, labels: list[int], height: int, width: int, num_classes: int) -> None:
        """INVALID_ARGUMENT naming the first box outside the height x width image, degenerate (narrower or lower
        than a pixel), not finite, or of a class id outside 1..num_classes."""
        from weakseg.data.box_targets import BoxError, check_box_targets

        try:
            check_box_targets(boxes, np.asarray(labels, dtype=np.int64), height, width, num_classes + 1)
        except BoxError as e:
            raise invalid(str(e)) from None

    @contextmanager
    def _exclusive(self, timeout: float | None) -> Iterator[None]:
        """The gradient worker for the block: a waiting slot (RESOURCE_EXHAUSTED if none is free), then the lock
        within timeout (DEADLINE_EXCEEDED)."""
        if not self._slots.acquire(blocking=False):
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "too many gradient explanations waiting; retry later"
            )
        try:
            if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed waiting for the gradient worker")
            try:
                yield
            finally:
                self._lock.release()
        finally:
            self._slots.release()

    def _checked(self, info: ModelInfo, image: np.ndarray) -> Path:
        """The model's checkpoint, after the checkpoint and pixel-limit checks."""
        if info.checkpoint is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {info.name!r} was exported without its PyTorch checkpoint; "
                f"gradient methods need {info.name}/checkpoint.safetensors in the repository",
            )
        h, w = image.shape[:2]
        if h * w > self.limits.max_pixels:
            raise invalid(f"image is {h}x{w}; gradient methods accept at most {self.limits.max_pixels} pixels here")
        return info.checkpoint

    def bbam(
        self,
        info: ModelInfo,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: list[int],
        iterations: int = 0,
        proposals: int = 0,
        seed: int = 0,
        timeout: float | None = None,
    ) -> BoxMaps:
        """BBAM maps of a uint8 HxWx3 image for boxes [B, 4] (xyxy, pixel edges) and their class ids (1..C)."""
        import torch

        from weakseg.attribution.bbam import BBAM

        iterations, proposals = self.bbam_settings(iterations, proposals, len(boxes))
        self.check_boxes(boxes, labels, image.shape[0], image.shape[1], len(info.labels))
        checkpoint = self._checked(info, image)
        with self._exclusive(timeout):
            model = self._model(checkpoint, info.kind)
            x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)
            result = BBAM(iterations=iterations, proposals=proposals).run(
                model, x, torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(labels), seed
            )
            return BoxMaps(result.maps.detach().cpu().numpy(), list(result.positives), list(result.iou_thresholds))

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

        checkpoint = self._checked(info, image)
        params = {"steps": self.steps(steps)} if method == "advcam" else {}
        with self._exclusive(timeout):
            model = self._model(checkpoint)
            device = next(model.parameters()).device
            x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0).to(device)
            maps = compute_maps(
                build_method(method, **params), model, x, classes, MultiScale(scales=(1.0,), flip=False)
            )
            return maps.detach().cpu().numpy()
