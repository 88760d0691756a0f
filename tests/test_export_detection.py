"""Detector and Mask R-CNN export: ONNX parity with PyTorch at the export size and a second size (detections matched
one to one by label and IoU), a config.pbtxt with max_batch_size 0 that parses into Triton's ModelConfig, the
checkpoint copied beside the ONNX, the traced resize's output size, and clear refusals."""

import json

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.detect_repo import CLASSES, SIZE, ort_detect, save_tiny_models, scene
from weakseg.export import ExportError, ExportOptions, ServingOptions, export_model
from weakseg.export.detection import (
    BOX_TOLERANCE,
    DetectionGraph,
    check_detection_parity,
    load_detection_model,
    match_detections,
)
from weakseg.export.repository import parity_size


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """'det' exported through export_model, 'inst' through `weakseg export` (its JSON summary kept)."""
    from cli.main import main

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("export_detection")
    det, inst = save_tiny_models(root)
    repo = root / "repo"
    result = export_model(det, repo, "det", ExportOptions(input_size=SIZE, serving=ServingOptions(instance_kind="cpu")))
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            main(
                [
                    "export",
                    "--model",
                    str(inst),
                    "--repo",
                    str(repo),
                    "--name",
                    "inst",
                    "--input-size",
                    str(SIZE),
                    "--cpu",
                ]
            )
            == 0
        )
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    return root, repo, result, summary


def graph(path, kind):
    model, _ = load_detection_model(path, kind)
    return DetectionGraph(model, masks=kind == "instance")


def test_export_checks_parity_at_the_export_size_and_a_second_size(exported):
    root, repo, result, summary = exported
    second = parity_size(SIZE)
    assert result.kind == "detector" and result.parity.ok
    assert result.parity.sizes == ((SIZE, SIZE), second)
    assert all(r == o > 0 for r, o in result.parity.detections)  # both sizes compare real detections
    assert result.parity.matched == sum(r for r, _ in result.parity.detections) and result.parity.unmatched == 0
    assert result.parity.max_box_diff <= BOX_TOLERANCE and result.parity.max_score_diff <= 1e-3
    assert (
        summary["kind"] == "instance"
        and summary["parity"]["ok"]
        and summary["parity"]["output_names"] == ["boxes", "scores", "labels", "masks"]
    )
    assert summary["parity"]["sizes"] == [[SIZE, SIZE], list(second)]
    assert summary["parity"]["mask_share"] <= summary["parity"]["mask_share_limit"]
    provenance = json.loads((repo / "inst" / "export.json").read_text())
    assert provenance["parity"]["ok"] and provenance["opset"] == 17 and provenance["kind"] == "instance"


@pytest.mark.parametrize("kind,name", [("detector", "det"), ("instance", "inst")])
def test_onnxruntime_matches_pytorch_on_new_images_at_two_sizes(exported, kind, name):
    root, repo, _, _ = exported
    g = graph(root / f"{name}.safetensors", kind)
    onnx_bytes = (repo / name / "1" / "model.onnx").read_bytes()
    # 85 x 103: torchvision's own traced resize rounds its output size to 105 x 128 where PyTorch makes 105 x 127
    images = [scene(21, SIZE, SIZE), scene(22, 85, 103)]
    report = check_detection_parity(onnx_bytes, g, images, 0.05, 100)
    assert report.ok, report.describe()
    assert report.sizes == ((SIZE, SIZE), (85, 103)) and all(r == o > 0 for r, o in report.detections)
    assert report.matched == sum(r for r, _ in report.detections)
    out = ort_detect(repo, name, images[1])
    assert out["labels"].dtype == np.int64 and set(out["labels"]) <= set(range(1, len(CLASSES) + 1))
    assert np.all(np.diff(out["scores"]) <= 0)  # highest score first
    if kind == "instance":
        assert out["masks"].shape == (len(out["boxes"]), 85, 103) and out["masks"].dtype == np.float32


def test_matching_pairs_reordered_detections_and_leaves_the_rest_out():
    rng = np.random.default_rng(0)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [5, 30, 25, 60], [40, 0, 60, 20]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.80001, 0.3], dtype=np.float32)
    labels = np.array([1, 2, 2, 1])
    order = np.array([2, 0, 1, 3])  # near-equal scores swapped, as NMS may order them
    jitter = rng.normal(0, 1e-3, size=boxes.shape).astype(np.float32)
    pairs, lone_ref, lone_out = match_detections(
        (boxes, scores, labels), (boxes[order] + jitter, scores[order], labels[order])
    )
    assert sorted(pairs) == sorted((int(order[j]), j) for j in range(4)) and not lone_ref and not lone_out
    # another label, or a box that moved away, finds no partner
    labels_b = labels.copy()
    labels_b[3] = 2
    moved = boxes.copy()
    moved[0] += 30
    pairs, lone_ref, lone_out = match_detections((boxes, scores, labels), (moved, scores, labels_b))
    assert sorted(pairs) == [(1, 1), (2, 2)] and lone_ref == [0, 3] and lone_out == [0, 3]


def test_parity_check_catches_a_model_that_differs(exported):
    root, repo, _, _ = exported
    g = graph(root / "det.safetensors", "detector")
    onnx_bytes = (repo / "det" / "1" / "model.onnx").read_bytes()
    image = scene(3)
    assert check_detection_parity(onnx_bytes, g, [image], 0.05, 100).ok
    with torch.no_grad():
        g.model.roi_heads.box_predictor.bbox_pred.bias.add_(0.05)  # every box moves
    report = check_detection_parity(onnx_bytes, g, [image], 0.05, 100)
    assert not report.ok and report.max_box_diff > BOX_TOLERANCE and "box diff" in report.describe()


def test_config_is_unbatched_with_dynamic_dims_and_the_checkpoint_is_beside_it(exported):
    root, repo, _, _ = exported
    for name, kind in (("det", "detector"), ("inst", "instance")):
        entry = repo / name
        cfg = text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching") and cfg.platform == "onnxruntime_onnx"
        assert [(t.name, list(t.dims)) for t in cfg.input] == [("pixels", [-1, -1, 3])]
        assert cfg.input[0].data_type == model_config_pb2.TYPE_UINT8
        outputs = {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.output}
        expected = {"boxes": ("TYPE_FP32", [-1, 4]), "scores": ("TYPE_FP32", [-1]), "labels": ("TYPE_INT64", [-1])}
        if kind == "instance":
            expected["masks"] = ("TYPE_FP32", [-1, -1, -1])
        assert outputs == expected
        assert cfg.parameters["model_kind"].string_value == kind
        assert json.loads(cfg.parameters["classes"].string_value) == CLASSES
        assert cfg.parameters["box_score_thresh"].string_value == "0.05"
        assert cfg.model_warmup[0].batch_size == 1 and list(cfg.model_warmup[0].inputs["pixels"].dims) == [
            SIZE,
            SIZE,
            3,
        ]
        assert (entry / "labels.txt").read_text().splitlines() == CLASSES
        assert (entry / "checkpoint.safetensors").read_bytes() == (root / f"{name}.safetensors").read_bytes()


def test_a_detector_that_finds_nothing_is_refused_and_its_python_backend_variant_stays_unbatched(exported, tmp_path):
    from tests.detect_repo import settle_batchnorm
    from weakseg.export.python_backend import write_python_backend_entry
    from weakseg.models.detector import DetectorConfig, build_detector, save_detector

    _, repo, _, _ = exported
    torch.manual_seed(0)
    config = DetectorConfig(classes=tuple(CLASSES), min_size=128, max_size=128, box_head_dim=64, box_score_thresh=1.0)
    model = build_detector(config)
    settle_batchnorm(model, [scene(0)])
    save_detector(tmp_path / "blind.safetensors", model, config)
    with pytest.raises(ExportError, match="finds nothing in any of 4 synthetic 64x64 images.*--trace-image"):
        export_model(tmp_path / "blind.safetensors", tmp_path / "repo", "blind", ExportOptions(input_size=SIZE))
    assert not (tmp_path / "repo").exists()
    dest = write_python_backend_entry(repo / "det", tmp_path / "python_repo")
    cfg = text_format.Parse((dest / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.backend == "python" and cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert (dest / "1" / "model.onnx").read_bytes() == (repo / "det" / "1" / "model.onnx").read_bytes()
