"""CAM classifier export: logits and Eq. 2.1 CAMs served without gradients, config model_kind, refusal on parity failure."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from weakseg.export import ExportError, ExportOptions, ServingOptions, export_model
from weakseg.models.classifier_io import load_classifier, save_classifier
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

CLASSES = ["train", "boat", "bird"]


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    """A resnet18 CAM classifier checkpoint with fixed random weights and running statistics."""
    torch.manual_seed(0)
    model = CAMClassifier(ClassifierConfig(num_classes=3))
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        model(torch.rand(4, 3, 64, 64))
    path = tmp_path_factory.mktemp("clf") / "model.safetensors"
    save_classifier(path, model.eval(), CLASSES)
    return path


@pytest.fixture(scope="module")
def exported(classifier_ckpt, tmp_path_factory):
    """The classifier exported with the CPU instance variant."""
    torch.set_num_threads(2)
    repo = tmp_path_factory.mktemp("repo")
    result = export_model(classifier_ckpt, repo, "cam", ExportOptions(input_size=64, serving=ServingOptions(instance_kind="cpu")))
    return result


def test_classifier_graph_outputs_logits_and_eq_2_1_cams(exported, classifier_ckpt):
    from weakseg.attribution import MultiScale, build_method
    from weakseg.attribution.base import compute_maps

    assert exported.parity.ok and exported.parity.second_output == "cams"
    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    model, _ = load_classifier(classifier_ckpt)
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        pixels = rng.integers(0, 256, size=(batch, 80, 56, 3), dtype=np.uint8)
        logits, cams = session.run(["logits", "cams"], {"pixels": pixels})
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            assert np.abs(logits - model(x).numpy()).max() < 1e-4
        assert cams.shape == (batch, 3, 80, 56) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
        reference = compute_maps(build_method("cam"), model, x[0], [0, 1, 2], MultiScale(scales=(1.0,), flip=False))
        assert np.abs(cams[0] - reference.numpy()).max() < 1e-3


def test_classifier_config_names_its_kind_and_cpu_instances(exported):
    cfg = text_format.Parse(exported.config_path.read_text(), model_config_pb2.ModelConfig())
    assert cfg.parameters["model_kind"].string_value == "classifier"
    assert json.loads(cfg.parameters["classes"].string_value) == CLASSES
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    outputs = {o.name: list(o.dims) for o in cfg.output}
    assert outputs == {"logits": [3], "cams": [3, -1, -1]}
    assert (exported.model_dir / "labels.txt").read_text().splitlines() == CLASSES


def test_failed_parity_writes_nothing(classifier_ckpt, tmp_path):
    """A tolerance no real runtime meets (exact equality) stands in for a disagreeing graph: export must refuse."""
    with pytest.raises(ExportError, match="disagrees with PyTorch.*nothing written"):
        export_model(classifier_ckpt, tmp_path / "repo", "cam", ExportOptions(input_size=48, tolerance=0.0))
    assert not (tmp_path / "repo").exists()
