"""What every inference backend behind the gRPC APIs offers: a model catalogue and forward passes.

Two backends implement it: `embedded` (onnxruntime in this process, over a model repository written by
`weakseg export`) and `triton` (forwards to a Triton Inference Server over gRPC). Both speak in numpy arrays
and the exported graphs' tensor names (`pixels` in; `logits` + `mask` or `logits` + `cams` out; detectors
`boxes`, `scores`, `labels` and instance segmenters also `masks`, for one unbatched image, max_batch_size 0).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

SEGMENTER = "segmenter"
CLASSIFIER = "classifier"
DETECTOR = "detector"  # torchvision Faster R-CNN
INSTANCE = "instance"  # torchvision Mask R-CNN
KINDS = (SEGMENTER, CLASSIFIER, DETECTOR, INSTANCE)


class ServingError(Exception):
    """An expected failure of a request, carrying the gRPC status code it should be answered with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def invalid(message: str) -> ServingError:
    """INVALID_ARGUMENT with a message naming the problem."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """NOT_FOUND (unknown model or version)."""
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


@dataclass(frozen=True)
class TensorMeta:
    """One input or output tensor as KServe v2 describes it: shape includes the batch dimension, -1 = variable."""

    name: str
    datatype: str  # KServe v2 names: UINT8, FP32, ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model: identity, kind, labels in output-channel order, tensors, and its PyTorch checkpoint if any."""

    name: str
    version: str
    kind: str  # segmenter | classifier | detector | instance
    labels: tuple[str, ...]  # segmenter: background first; classifier, detector, instance: the C classes
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    max_batch_size: int
    platform: str = "onnxruntime_onnx"
    checkpoint: Path | None = None  # for gradient methods on the embedded backend

    @property
    def batched(self) -> bool:
        """False for one-image models (max_batch_size 0): their tensors have no batch dimension."""
        return self.max_batch_size > 0


class Backend(ABC):
    """A source of forward passes for the models of one repository."""

    name: str = "abstract"
    supports_gradients: bool = False  # can run Grad-CAM / AdvCAM from PyTorch checkpoints

    @abstractmethod
    def models(self) -> list[ModelInfo]:
        """Every loaded model (latest version of each)."""

    def model(self, name: str, version: str = "") -> ModelInfo:
        """The model called `name` (version '' = the loaded one), or NOT_FOUND."""
        for info in self.models():
            if info.name == name and version in ("", info.version):
                return info
        known = ", ".join(sorted(m.name for m in self.models())) or "none"
        what = f"model {name!r}" + (f" version {version!r}" if version else "")
        raise not_found(f"{what} is not loaded (models: {known})")

    @abstractmethod
    def ready(self) -> bool:
        """True once every model is loaded and warmed up."""

    @abstractmethod
    def infer(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str],
        *,
        version: str = "",
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on batched inputs; return the requested outputs by name. Raises ServingError."""

    def set_batch_observer(self, observe: Callable[[str, int, list[float]], None]) -> None:  # noqa: B027 - optional hook
        """Receive (model, rows, queue seconds of each request) for every batch this backend forms itself."""

    def close(self) -> None:  # noqa: B027 - optional hook: a backend holding nothing needs no close
        """Release sessions, threads and connections."""
