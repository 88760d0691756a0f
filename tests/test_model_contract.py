"""The model contract (weakseg.models.contract.CAMModel): CAMClassifier implements it, methods refuse what does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import random_bn_classifier
from weakseg.attribution import CAM, FickleNet, GradCAM, MultiScale, compute_maps
from weakseg.models.contract import CAM_MODEL_MEMBERS, CAMModel, InputNormalization, require_cam_model
from weakseg.models.resnet_cam import STAGES, CAMClassifier, ClassifierConfig

ROOT = Path(__file__).resolve().parents[1]
ONE_SCALE = MultiScale(scales=(1.0,), flip=False)


@pytest.mark.parametrize("head", ["cam", "fickle"])
def test_cam_classifier_satisfies_the_protocol(head: str) -> None:
    model = CAMClassifier(ClassifierConfig(num_classes=3, head=head))
    assert isinstance(model, CAMModel)
    assert isinstance(model.normalize, InputNormalization)
    assert model.num_classes == 3 and model.stages == STAGES
    assert require_cam_model(model) is model


def test_every_protocol_member_is_listed() -> None:
    """CAM_MODEL_MEMBERS (the error message's list) is the Protocol's member set, so no member goes unnamed."""
    declared = {n for n in vars(CAMModel) if not n.startswith("_")} - {"_is_protocol"}
    assert declared == set(CAM_MODEL_MEMBERS)


class NotACAMModel(nn.Module):
    """A classifier with logits only: no CAMs, no stages."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", [CAM(), GradCAM(), FickleNet(samples=2)])
def test_a_method_refuses_a_model_lacking_the_contract(method) -> None:
    model = NotACAMModel()
    assert not isinstance(model, CAMModel)
    with pytest.raises(TypeError, match=r"needs a CAM model .*NotACAMModel lacks .*logits_and_cams"):
        compute_maps(method, model, torch.rand(3, 32, 32), [0], ONE_SCALE)


def test_a_partial_model_is_named_with_what_it_lacks() -> None:
    class NoStages(NotACAMModel):
        normalize = nn.Identity()
        classifier = nn.Identity()
        num_classes = 4

        def features(self, x): ...
        def class_maps(self, f): ...
        def logits_from_features(self, f): ...
        def logits_and_cams(self, x): ...
        def stage_outputs(self, x, keep=()): ...

    with pytest.raises(TypeError) as e:
        require_cam_model(NoStages(), "gradcam")
    assert str(e.value).endswith("NoStages lacks stages, forward_from")


def test_gradcam_target_layer_must_be_a_stage_of_the_model() -> None:
    model = random_bn_classifier(num_classes=3)
    with pytest.raises(ValueError, match=r"'block9' is not a stage of the model \('stem', 'layer1'"):
        compute_maps(GradCAM(target_layer="block9"), model, torch.rand(3, 32, 32), [0], ONE_SCALE)
    maps = compute_maps(GradCAM(target_layer="layer2"), model, torch.rand(3, 32, 32), [0, 2], ONE_SCALE)
    assert maps.shape == (2, 32, 32)


def test_the_assignment_type_checks_and_a_non_model_does_not(tmp_path: Path) -> None:
    """mypy accepts `CAMModel = CAMClassifier(...)` and rejects an object lacking the members."""
    good = tmp_path / "good.py"
    good.write_text("from weakseg.models.contract import CAMModel\n"
                    "from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig\n"
                    "model: CAMModel = CAMClassifier(ClassifierConfig(num_classes=3))\n")
    bad = tmp_path / "bad.py"
    bad.write_text("from weakseg.models.contract import CAMModel\n"
                   "class Plain:\n"
                   "    def features(self, x: object) -> object: ...\n"
                   "model: CAMModel = Plain()\n")
    args = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports", "--no-incremental",
            "--cache-dir", str(tmp_path / "cache")]
    ok = subprocess.run([*args, str(good)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ko = subprocess.run([*args, str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ko.returncode == 1 and '(expression has type "Plain", variable has type "CAMModel")' in ko.stdout, ko.stdout + ko.stderr
