"""NVIDIA's tritonclient.grpc against weakseg's KServe v2 endpoint: health, metadata, config, and inference
equal to onnxruntime run directly, at batch sizes 1..4 and for both model kinds."""

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from serving.backends.embedded import EmbeddedBackend
from tests.serving_repo import CLASSES, ort_run, running_server


@pytest.fixture(scope="module")
def client(serving_repo):
    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1)) as server:
        c = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
        yield c
        c.close()


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("seg") and client.is_model_ready("cam", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("seg", "7")
    assert client.get_server_metadata(as_json=True)["name"] == "weakseg"


def test_model_metadata_config_and_index(client):
    meta = client.get_model_metadata("seg", as_json=True)
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "pixels", "datatype": "UINT8", "shape": ["-1", "-1", "-1", "3"]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "mask"]
    config = client.get_model_config("cam").config
    assert config.max_batch_size == 8 and config.parameters["model_kind"].string_value == "classifier"
    assert sorted(m["name"] for m in client.get_model_repository_index(as_json=True)["models"]) == ["cam", "seg"]
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_infer_equals_onnxruntime(client, serving_repo, batch):
    pixels = np.random.default_rng(batch).integers(0, 256, size=(batch, 48, 64, 3), dtype=np.uint8)
    for name, outputs in (("seg", ["logits", "mask"]), ("cam", ["logits", "cams"])):
        inp = tc.InferInput("pixels", list(pixels.shape), "UINT8")
        inp.set_data_from_numpy(pixels)
        result = client.infer(name, [inp], outputs=[tc.InferRequestedOutput(o) for o in outputs], request_id=f"r{batch}")
        ref = ort_run(serving_repo, name, pixels)
        assert result.get_response().id == f"r{batch}" and result.get_response().model_version == "1"
        for o in outputs:
            got = result.as_numpy(o)
            assert got.shape == ref[o].shape and got.dtype == ref[o].dtype
            np.testing.assert_allclose(got, ref[o], atol=1e-5)


def test_infer_without_requested_outputs_returns_all(client):
    inp = tc.InferInput("pixels", [1, 40, 40, 3], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 40, 40, 3), np.uint8))
    result = client.infer("cam", [inp])
    assert result.as_numpy("logits").shape == (1, len(CLASSES)) and result.as_numpy("cams").shape == (1, 3, 40, 40)


def _error(client, name, inputs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        client.infer(name, inputs)
    return e.value


def test_bad_inference_requests_get_clear_codes(client):
    good = np.zeros((1, 40, 40, 3), np.uint8)
    inp = tc.InferInput("pixels", list(good.shape), "UINT8")
    inp.set_data_from_numpy(good)
    assert _error(client, "nope", [inp]).status() == "StatusCode.NOT_FOUND"
    wrong_type = tc.InferInput("pixels", list(good.shape), "FP32")
    wrong_type.set_data_from_numpy(good.astype(np.float32))
    e = _error(client, "seg", [wrong_type])
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "must be UINT8" in e.message()
    nan = tc.InferInput("pixels", [1, 2], "FP32")
    nan.set_data_from_numpy(np.array([[np.nan, 1]], np.float32))
    assert "NaN" in _error(client, "seg", [nan]).message()
    wrong_channels = tc.InferInput("pixels", [1, 40, 40, 4], "UINT8")
    wrong_channels.set_data_from_numpy(np.zeros((1, 40, 40, 4), np.uint8))
    assert _error(client, "seg", [wrong_channels]).status() == "StatusCode.INVALID_ARGUMENT"
    wrong_name = tc.InferInput("image", list(good.shape), "UINT8")
    wrong_name.set_data_from_numpy(good)
    assert "takes inputs ['pixels']" in _error(client, "seg", [wrong_name]).message()
    too_big = tc.InferInput("pixels", [9, 40, 40, 3], "UINT8")
    too_big.set_data_from_numpy(np.zeros((9, 40, 40, 3), np.uint8))
    assert "outside 1..8" in _error(client, "seg", [too_big]).message()
    assert client.is_server_ready()
