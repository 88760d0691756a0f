"""Segmenter export: the demo's train -> evaluate -> export call, ONNX parity at untraced sizes, dynamic batches,
a config.pbtxt that parses into Triton's ModelConfig, and clear errors for bad checkpoints."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from training.segmenter import SegmenterJob, train_evaluate_export
from weakseg.engine import TrainConfig
from weakseg.export import ExportError, ExportOptions, export_model
from weakseg.export.graphs import SegmenterGraph
from weakseg.export.onnx_export import check_parity
from weakseg.models.segmenter_infer import InferenceConfig, segment
from weakseg.models.segmenter_io import load_segmenter
from weakseg.data.voc import VOCDataset
from tests.metric_reference import confusion_by_hand, reference_scores

CPU = torch.device("cpu")


def parse_config(path) -> model_config_pb2.ModelConfig:
    """config.pbtxt -> Triton's ModelConfig message (raises on any unknown field or bad value)."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exported(tiny_synth, tmp_path_factory):
    """A segmenter trained 2 epochs, evaluated and exported by the demo's one call."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("export")
    job = SegmenterJob(data=tiny_synth, labels="gt", out=root / "run", crop=64, val_split=None,
                       train=TrainConfig(epochs=2, batch_size=8, lr=5e-3))
    summary = train_evaluate_export(job, CPU, repo=root / "repo", name="seg", progress=False)
    return summary, root


def test_train_evaluate_export_writes_a_triton_entry(exported, tiny_synth):
    summary, root = exported
    assert summary["epochs"] == 2
    # the reported evaluation, recounted by hand: the saved model's masks on every val image against its mask
    model, classes = load_segmenter(root / "run")
    val = VOCDataset(tiny_synth, "val")
    pairs = [(val.mask(i), segment(model, val.image(i), CPU, InferenceConfig())) for i in val.ids]
    by_hand = reference_scores(confusion_by_hand(pairs, len(classes) + 1))
    assert summary["eval"]["images"] == len(val.ids) == 12
    assert summary["eval"]["miou"] == pytest.approx(by_hand["miou"], abs=1e-12)
    assert summary["eval"]["pixel_acc"] == pytest.approx(by_hand["pixel_acc"], abs=1e-12)
    np.testing.assert_allclose([np.nan if v is None else v for v in summary["eval"]["per_class"].values()],
                               by_hand["per_class"], atol=1e-12)
    entry = root / "repo" / "seg"
    assert (entry / "1" / "model.onnx").is_file() and (entry / "config.pbtxt").is_file()
    labels = (entry / "labels.txt").read_text().splitlines()
    assert labels[0] == "background" and len(labels) == 5
    provenance = json.loads((entry / "export.json").read_text())
    assert provenance["parity"]["ok"] and provenance["parity"]["max_abs_diff"] < 1e-4
    assert (provenance["parity"]["height"], provenance["parity"]["width"]) != (64, 64)  # not the traced size


def test_parity_on_a_second_size_and_dynamic_batches_1_to_4(exported):
    _, root = exported
    model, _ = load_segmenter(root / "run")
    graph = SegmenterGraph(model).eval()
    session = ort.InferenceSession(str(root / "repo" / "seg" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"] and session.get_inputs()[0].type == "tensor(uint8)"
    rng = np.random.default_rng(1)
    for batch in (1, 2, 3, 4):
        pixels = rng.integers(0, 256, size=(batch, 72, 104, 3), dtype=np.uint8)
        logits, mask = session.run(["logits", "mask"], {"pixels": pixels})
        with torch.no_grad():
            ref_logits, ref_mask = (t.numpy() for t in graph(torch.from_numpy(pixels)))
        assert logits.shape == (batch, 5, 72, 104) and mask.shape == (batch, 72, 104) and mask.dtype == np.uint8
        assert np.abs(logits - ref_logits).max() < 1e-4
        top2 = np.sort(ref_logits, axis=1)[:, -2:]
        assert np.all((mask == ref_mask) | (top2[:, 1] - top2[:, 0] < 2e-4))
        assert np.array_equal(mask, logits.argmax(axis=1))


def test_config_pbtxt_parses_into_triton_model_config(exported):
    _, root = exported
    entry = root / "repo" / "seg"
    cfg = parse_config(entry / "config.pbtxt")
    assert cfg.name == "seg" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    (pixels,) = cfg.input
    assert pixels.name == "pixels" and pixels.data_type == model_config_pb2.TYPE_UINT8
    assert list(pixels.dims) == [-1, -1, 3] and pixels.format == model_config_pb2.ModelInput.FORMAT_NHWC
    outputs = {o.name: o for o in cfg.output}
    assert list(outputs["logits"].dims) == [5, -1, -1] and outputs["logits"].label_filename == "labels.txt"
    assert list(outputs["mask"].dims) == [-1, -1] and outputs["mask"].data_type == model_config_pb2.TYPE_UINT8
    queue = cfg.dynamic_batching.default_queue_policy
    assert queue.max_queue_size == 64 and queue.default_timeout_microseconds > 0
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    warm = cfg.model_warmup[0]
    assert warm.batch_size == 1 and list(warm.inputs["pixels"].dims) == [64, 64, 3] and warm.inputs["pixels"].zero_data
    assert cfg.parameters["model_kind"].string_value == "segmenter"
    assert json.loads(cfg.parameters["classes"].string_value) == (entry / "labels.txt").read_text().splitlines()


def test_cpu_variant_and_quoting_parse():
    from weakseg.export.repository import tensor_specs
    from weakseg.export.triton_config import ServingOptions, render_config

    inputs, outputs = tensor_specs("classifier", 2)
    text = render_config('odd "name"', "classifier", inputs, outputs, ['a "quoted" class', "é\\n"],
                         ServingOptions(instance_kind="cpu", instance_count=2, max_batch_size=4, preferred_batch_sizes=(2, 4)),
                         header="first line\nsecond line")
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert cfg.name == 'odd "name"' and cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert cfg.instance_group[0].count == 2 and list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert json.loads(cfg.parameters["classes"].string_value) == ['a "quoted" class', "é\\n"]
    assert cfg.parameters["model_kind"].string_value == "classifier" and list(cfg.output[0].dims) == [2]
    with pytest.raises(ValueError, match="preferred"):
        render_config("x", "classifier", inputs, outputs, [], ServingOptions(max_batch_size=2))


def test_parity_check_catches_a_graph_that_differs(exported):
    _, root = exported
    model, _ = load_segmenter(root / "run")
    onnx_bytes = (root / "repo" / "seg" / "1" / "model.onnx").read_bytes()
    assert check_parity(onnx_bytes, SegmenterGraph(model), 40, 56).ok
    with torch.no_grad():
        model.net.classifier.high_classifier.bias.add_(0.01)
    report = check_parity(onnx_bytes, SegmenterGraph(model), 40, 56)
    assert not report.ok and report.max_abs_diff > 1e-3 and "logits" in report.describe()


def test_existing_versions_bad_names_and_bad_checkpoints_refuse_cleanly(exported, tmp_path, capsys):
    from cli.main import main

    _, root = exported
    with pytest.raises(ExportError, match="already exists"):
        export_model(root / "run", root / "repo", "seg")
    with pytest.raises(ExportError, match="model name"):
        export_model(root / "run", root / "repo", "../escape")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"{}" * 10)
    assert main(["export", "--model", str(garbage), "--repo", str(tmp_path / "repo"), "--name", "x"]) == 2
    assert "garbage.safetensors" in capsys.readouterr().err
    from weakseg.models.checkpoint import save_weights

    unknown = tmp_path / "other.safetensors"
    save_weights(unknown, torch.nn.Linear(2, 2), "irn", {})  # a kind export does not take
    with pytest.raises(Exception, match="cannot be exported"):
        export_model(unknown, tmp_path / "repo", "x", ExportOptions())
    assert not (tmp_path / "repo").exists()
