"""The model contract every attribution method relies on: `CAMModel`, a runtime-checkable typing.Protocol.

A CAM model is a torch module taking float RGB in [0, 1] ([N,3,H,W], normalisation inside) whose classification
layer is applied to the last feature map before pooling, so one forward gives logits and class activation maps.
The backbone is a sequence of named stages (`stages`, input to last feature map); Grad-CAM reads one stage's
output (`stage_outputs`) and continues from it (`forward_from`). AdvCAM climbs on the normalised input, so the
model exposes its normalisation's mean and std (`normalize`). RIB adapts a deep copy of the model
(`parameters`, `eval`, `requires_grad_`) and may scale the head's learning rate (`classifier`). FickleNet needs
`classifier` to be a FickleHead.

`weakseg.models.resnet_cam.CAMClassifier` implements it; a new backbone family implements the same members.
`require_cam_model` is the check the public entry points run: a clear TypeError naming what is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class InputNormalization(Protocol):
    """The model's input normalisation: (x - mean) / std with mean and std of shape [1,3,1,1]."""

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean [1,3,1,1] subtracted from [0,1] RGB."""
        ...

    @property
    def std(self) -> torch.Tensor:
        """Per-channel std [1,3,1,1] the centred input is divided by."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input of the same shape."""
        ...


@runtime_checkable
class CAMModel(Protocol):
    """A CAM-ready multi-label classifier (see the module docstring for who uses which member)."""

    @property
    def num_classes(self) -> int:
        """Number of classes C (foreground only, no background)."""
        ...

    @property
    def stages(self) -> tuple[str, ...]:
        """Names of the backbone stages, from the input to the last feature map (Grad-CAM target layers)."""
        ...

    @property
    def normalize(self) -> InputNormalization:
        """The input normalisation applied inside the model (AdvCAM climbs in its output space)."""
        ...

    @property
    def classifier(self) -> nn.Module:
        """The classification layer applied to the last feature map (1x1 bias-free conv, or a FickleHead)."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-label logits [N, C]."""
        ...

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map f(x): [N, D, h, w]."""
        ...

    def class_maps(self, feats: torch.Tensor) -> torch.Tensor:
        """Raw (un-ReLU'd, unnormalised) class maps of a feature map: [N, C, h, w]."""
        ...

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits [N, C] from a feature map f(x)."""
        ...

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward: logits [N, C] and raw CAMs [N, C, h, w], logits = GAP(CAMs) for a linear head."""
        ...

    def stage_outputs(
        self, x: torch.Tensor, keep: tuple[str, ...] = ()
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the backbone: the last feature map and the outputs of the stages named in keep."""
        ...

    def forward_from(self, stage: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Continue the forward pass from the output of `stage`: (logits, raw CAMs)."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The trainable parameters (RIB adapts them)."""
        ...

    def eval(self) -> CAMModel:
        """Evaluation mode (BatchNorm running statistics); returns the model."""
        ...

    def requires_grad_(self, requires_grad: bool = True) -> CAMModel:
        """Switch parameter gradients on or off; returns the model."""
        ...


CAM_MODEL_MEMBERS: tuple[str, ...] = (
    "num_classes",
    "stages",
    "normalize",
    "classifier",
    "features",
    "class_maps",
    "logits_from_features",
    "logits_and_cams",
    "stage_outputs",
    "forward_from",
    "parameters",
    "eval",
    "requires_grad_",
)


def require_cam_model(model: object, user: str = "attribution") -> CAMModel:
    """`model` itself when it implements CAMModel; otherwise a TypeError naming the missing members."""
    if isinstance(model, CAMModel):
        return model
    missing = [m for m in CAM_MODEL_MEMBERS if not hasattr(model, m)]
    raise TypeError(
        f"{user} needs a CAM model (weakseg.models.contract.CAMModel, e.g. CAMClassifier); "
        f"{type(model).__name__} lacks {', '.join(missing) or 'a callable forward'}"
    )
