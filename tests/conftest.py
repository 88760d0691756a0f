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


def random_bn_classifier(requires_grad: bool = False, num_classes: int = 4):
    """An untrained resnet18 CAM classifier (OS 8) with non-trivial BatchNorm statistics, in eval mode."""
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

    torch.manual_seed(0)
    m = CAMClassifier(ClassifierConfig(num_classes=num_classes, arch="resnet18", output_stride=8))
    for bn in m.modules():  # non-trivial BN statistics so eval mode is not the identity
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval().requires_grad_(requires_grad)


@pytest.fixture(scope="session")
def random_model(tiny_synth, tmp_path_factory) -> Path:
    """An untrained (seeded) CAM classifier checkpoint for tiny_synth's classes: outputs only need to be reproducible."""
    from weakseg.data.classes import load_classes
    from weakseg.models.classifier_io import save_classifier
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

    classes = load_classes(tiny_synth)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clf") / "model.safetensors"
    save_classifier(path, CAMClassifier(ClassifierConfig(num_classes=len(classes))), classes)
    return path


from tests.serving_repo import serving_repo  # noqa: E402,F401  (session fixture shared by the serving tests)
from tests.triton_server import triton_env, triton_models, triton_server  # noqa: E402,F401  (real Triton, session)
