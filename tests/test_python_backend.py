"""Python-backend variant of exported entries: a config.pbtxt that parses into Triton's ModelConfig and keeps
everything of the onnxruntime_onnx entry but the platform and instance kind, the files beside it, refusals,
and `weakseg export --python-backend-repo`."""

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from weakseg.export import ExportError
from weakseg.export.python_backend import MODEL_TEMPLATE, write_python_backend_entry


def parse(path) -> mc.ModelConfig:
    """config.pbtxt -> ModelConfig (raises on unknown fields)."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


@pytest.mark.parametrize("name, kind", [("seg", "segmenter"), ("cam", "classifier")])
def test_variant_config_keeps_the_onnx_entry_but_backend_and_instances(triton_models, name, kind):
    source, variant = triton_models.onnx_repo / name, triton_models.python_repo / name
    onnx_cfg, py_cfg = parse(source / "config.pbtxt"), parse(variant / "config.pbtxt")
    assert onnx_cfg.platform == "onnxruntime_onnx" and onnx_cfg.backend == ""
    assert py_cfg.backend == "python" and py_cfg.platform == "" and py_cfg.name == name
    assert [g.kind for g in py_cfg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert py_cfg.parameters["model_kind"].string_value == kind and py_cfg.parameters["onnx_threads"].string_value == "1"
    for field in ("input", "output", "max_batch_size", "dynamic_batching", "model_warmup"):
        assert getattr(py_cfg, field) == getattr(onnx_cfg, field), field
    assert json.loads(py_cfg.parameters["classes"].string_value) == (variant / "labels.txt").read_text().splitlines()
    assert (variant / "1" / "model.onnx").read_bytes() == (source / "1" / "model.onnx").read_bytes()
    assert (variant / "1" / "model.py").read_text() == MODEL_TEMPLATE.read_text()
    compile((variant / "1" / "model.py").read_text(), "model.py", "exec")


def test_refusals(triton_models, tmp_path):
    source = triton_models.onnx_repo / "seg"
    with pytest.raises(ExportError, match="already exist"):
        write_python_backend_entry(source, triton_models.python_repo)
    with pytest.raises(ExportError, match="version"):
        write_python_backend_entry(source, tmp_path, versions=[3])
    with pytest.raises(ExportError, match="own repository folder"):
        write_python_backend_entry(source, triton_models.onnx_repo)
    with pytest.raises(ExportError, match="expected a onnxruntime_onnx entry"):  # a variant is not a source
        write_python_backend_entry(triton_models.python_repo / "seg", tmp_path)
    with pytest.raises(ExportError, match="not found"):
        write_python_backend_entry(tmp_path / "missing", tmp_path / "out")
    renamed = write_python_backend_entry(source, tmp_path, name="seg_cpu", instance_count=2)
    cfg = parse(renamed / "config.pbtxt")
    assert cfg.name == "seg_cpu" and cfg.instance_group[0].count == 2 and (renamed / "labels.txt").is_file()


def test_export_cli_writes_the_variant(triton_models, tmp_path, capsys):
    from cli.main import main

    code = main(["export", "--model", str(triton_models.classifier), "--repo", str(tmp_path / "gpu"), "--name", "cam",
                 "--input-size", "48", "--python-backend-repo", str(tmp_path / "cpu")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["python_backend"] == str(tmp_path / "cpu" / "cam")
    assert parse(tmp_path / "gpu" / "cam" / "config.pbtxt").instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert parse(tmp_path / "cpu" / "cam" / "config.pbtxt").backend == "python"
    assert (tmp_path / "cpu" / "cam" / "1" / "model.py").is_file()
