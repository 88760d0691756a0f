"""Pretrained backbone weights: from a local file, or torchvision's ImageNet weights (downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from weakseg.errors import CheckpointError
from weakseg.models.resnet_cam import CAMClassifier

_TORCHVISION_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
}


def torchvision_state_dict(arch: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for arch, via torch.hub's cache (downloads when not cached)."""
    return _TORCHVISION_WEIGHTS[arch].get_state_dict(progress=progress)


def load_pretrained_backbone(model: CAMClassifier, source: str) -> None:
    """Initialise the backbone from 'imagenet' (torchvision) or a path to a ResNet state dict (.pth/.safetensors)."""
    if source == "imagenet":
        try:
            state = torchvision_state_dict(model.config.arch)
        except Exception as e:  # network errors come in many types
            raise CheckpointError(f"could not obtain ImageNet weights for {model.config.arch} "
                                  f"({type(e).__name__}: {e}); pass --pretrained PATH to a local file") from e
    else:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"{path}: pretrained weights file not found")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read pretrained weights ({type(e).__name__}: {e})") from e
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    try:
        model.load_backbone_state(state)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e
