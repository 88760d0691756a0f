"""Build, save and load CAM classifiers from checkpoints."""

from __future__ import annotations

import os
from typing import Any

import torch

from weakseg.errors import CheckpointError
from weakseg.models.checkpoint import load_weights, read_metadata, save_weights
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

KIND = "classifier"


def build_classifier_model(config: ClassifierConfig) -> CAMClassifier:
    """A fresh CAM classifier of config.arch: a ResNet (CAMClassifier) or an EfficientNet-Lite (EfficientNetCAM)."""
    from weakseg.models.efficientnet_cam import ARCHS as LITE_ARCHS
    from weakseg.models.efficientnet_cam import EfficientNetCAM

    return EfficientNetCAM(config) if config.arch in LITE_ARCHS else CAMClassifier(config)


def save_classifier(
    path: str | os.PathLike, model: CAMClassifier, classes: list[str], extra: dict[str, Any] | None = None
) -> None:
    """Save a classifier with its architecture config and class names."""
    save_weights(path, model, KIND, {**model.config.to_dict(), "classes": list(classes)}, extra)


def load_classifier(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[CAMClassifier, list[str]]:
    """Load a classifier (eval mode, no parameter gradients) and its class names from a run or file."""
    meta = read_metadata(path)
    if meta["kind"] != KIND:
        raise CheckpointError(f"{path}: is a {meta['kind']} checkpoint, expected a classifier")
    cfg = dict(meta["config"])
    classes = cfg.pop("classes", None)
    try:
        config = ClassifierConfig(**cfg)
        model = build_classifier_model(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unusable classifier config ({e})") from e
    load_weights(path, model)
    model.eval().requires_grad_(False)
    return model.to(device), list(classes or [])
