"""Shared fixtures: a tiny synthetic benchmark and a classifier trained on it (session-scoped: built once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch



@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A 48-train / 12-val synthetic benchmark at 64 px with 4 classes."""
    from weakseg.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "VOC2012"
    generate(SynthConfig(seed=3, train=48, val=12, ood=8, classes=4, size=64), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_classifier(tiny_synth, tmp_path_factory) -> Path:
    """A resnet18 CAM classifier trained 3 epochs on tiny_synth (a run folder)."""
    from training.classifier import ClassifierJob, train_classifier
    from weakseg.engine import TrainConfig

    run = tmp_path_factory.mktemp("runs") / "clf"
    torch.set_num_threads(2)
    train_classifier(ClassifierJob(data=tiny_synth, out=run, crop=64, train=TrainConfig(epochs=3, batch_size=8, lr=2e-3)),
                     torch.device("cpu"), progress=False)
    return run
