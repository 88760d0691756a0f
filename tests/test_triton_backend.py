"""The `triton` backend against a real Triton (nvidia-pytriton's CPU tritonserver over the python-backend variant
of exported models): catalogue, outputs equal to onnxruntime on the same model.onnx, batched requests inside
model.py, and every error mapped to its gRPC status."""

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from serving.backends.base import ServingError, TensorMeta
from serving.backends.triton import TritonBackend
from tests.serving_repo import ort_run
from tests.triton_server import CAM_LABELS, SEG_LABELS, free_port

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def backend(triton_server):
    """A TritonBackend on the test server."""
    b = TritonBackend(triton_server.url, timeout=60.0)
    yield b
    b.close()


def pixels(seed: int, batch: int, height: int, width: int) -> np.ndarray:
    """Random uint8 NHWC pixels."""
    return np.random.default_rng(seed).integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)


def assert_mask_matches(mask: np.ndarray, ref: dict[str, np.ndarray]) -> None:
    """Same argmax wherever the reference's top-2 logits are not a near-tie (batch composition may differ)."""
    top2 = np.sort(ref["logits"], axis=1)[:, -2:]
    assert mask.shape == ref["mask"].shape and np.all((mask == ref["mask"]) | (top2[:, 1] - top2[:, 0] < 2e-4))


def test_catalogue_and_readiness(backend):
    assert backend.ready() and backend.supports_gradients is False and backend.name == "triton"
    models = {m.name: m for m in backend.models()}
    assert sorted(models) == ["cam", "seg"]
    seg, cam = models["seg"], models["cam"]
    assert (seg.kind, seg.version, seg.labels, seg.max_batch_size) == ("segmenter", "1", ("background", *SEG_LABELS), 8)
    assert seg.inputs == (TensorMeta("pixels", "UINT8", (-1, -1, -1, 3)),)
    assert seg.outputs == (TensorMeta("logits", "FP32", (-1, 3, -1, -1)), TensorMeta("mask", "UINT8", (-1, -1, -1)))
    assert (cam.kind, cam.labels, seg.platform) == ("classifier", tuple(CAM_LABELS), "python")
    assert cam.outputs == (TensorMeta("logits", "FP32", (-1, 3)), TensorMeta("cams", "FP32", (-1, 3, -1, -1)))
    assert backend.model("cam").name == "cam" and backend.model("seg", "1").version == "1"


def test_segmenter_and_classifier_outputs_equal_onnxruntime(backend, triton_models):
    x = pixels(1, 1, 72, 96)
    out = backend.infer("seg", {"pixels": x}, ["logits", "mask"])
    ref = ort_run(triton_models.onnx_repo, "seg", x)
    assert out["mask"].dtype == np.uint8 and np.array_equal(out["mask"], ref["mask"])
    assert out["logits"].shape == (1, 3, 72, 96) and np.abs(out["logits"] - ref["logits"]).max() < 1e-4
    x = pixels(2, 2, 64, 80)
    out = backend.infer("cam", {"pixels": x}, ["logits", "cams"])
    ref = ort_run(triton_models.onnx_repo, "cam", x)
    assert out["cams"].shape == (2, 3, 64, 80) and np.abs(out["cams"] - ref["cams"]).max() < 1e-4
    assert np.abs(out["logits"] - ref["logits"]).max() < 1e-4
    only_mask = backend.infer("seg", {"pixels": x}, ["mask"])
    assert list(only_mask) == ["mask"] and only_mask["mask"].shape == (2, 64, 80)


def test_concurrent_requests_are_batched_and_split_back_correctly(backend, triton_models, triton_server):
    """Requests of batch 1 and 2 at two sizes at once: Triton's batcher joins them, model.py splits the results."""
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(triton_server.url)
    before = stats.get_inference_statistics("seg").model_stats[0]
    requests = [pixels(10 + i, 1 + i % 2, 64, 64) if i % 3 else pixels(10 + i, 1, 48, 80) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda x: backend.infer("seg", {"pixels": x}, ["logits", "mask"]), requests))
    for x, out in zip(requests, results):
        ref = ort_run(triton_models.onnx_repo, "seg", x)
        assert np.abs(out["logits"] - ref["logits"]).max() < 1e-4
        assert_mask_matches(out["mask"], ref)
    after = stats.get_inference_statistics("seg").model_stats[0]
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == sum(x.shape[0] for x in requests) and executions < len(requests)  # some were joined
    stats.close()


def test_messages_over_4_mib_pass_and_the_limit_is_applied(backend, triton_server, triton_models):
    big = pixels(3, 1, 1200, 1200)  # 4.3 MB of input, over gRPC's 4 MiB default
    assert big.nbytes > 4 * 1024 * 1024
    out = backend.infer("seg", {"pixels": big}, ["mask"])
    assert np.array_equal(out["mask"], ort_run(triton_models.onnx_repo, "seg", big)["mask"])
    small = TritonBackend(triton_server.url, max_message_bytes=1024 * 1024)
    try:
        with pytest.raises(ServingError) as e:
            small.infer("seg", {"pixels": big}, ["mask"])
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        small.close()


@pytest.mark.parametrize("name, x, outputs, code, match", [
    ("nope", pixels(0, 1, 64, 64), ["mask"], grpc.StatusCode.NOT_FOUND, "nope"),
    ("seg", pixels(0, 1, 64, 64)[..., :2], ["mask"], grpc.StatusCode.INVALID_ARGUMENT, "shape"),  # 2 channels
    ("seg", pixels(0, 9, 40, 40), ["mask"], grpc.StatusCode.INVALID_ARGUMENT, "batch"),  # over max_batch_size 8
    ("seg", pixels(0, 1, 64, 64).astype(np.float32), ["mask"], grpc.StatusCode.INVALID_ARGUMENT, "UINT8"),
    ("seg", pixels(0, 1, 64, 64), ["cams"], grpc.StatusCode.INVALID_ARGUMENT, "outputs"),
])
def test_bad_requests_get_their_status(backend, name, x, outputs, code, match):
    with pytest.raises(ServingError, match=match) as e:
        backend.infer(name, {"pixels": x}, outputs)
    assert e.value.code == code
    assert backend.ready()  # and the server keeps serving


def test_input_the_onnx_graph_rejects_is_invalid_argument_from_model_py(backend):
    """Height 0 passes Triton's config check ([-1, -1, 3]) but not the network: model.py answers INVALID_ARG."""
    with pytest.raises(ServingError, match="onnxruntime rejected") as e:
        backend.infer("cam", {"pixels": pixels(0, 1, 0, 64)}, ["logits"])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_deadline_and_full_queue(backend):
    with pytest.raises(ServingError) as e:
        backend.infer("cam", {"pixels": pixels(4, 8, 256, 256)}, ["logits"], timeout=0.001)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

    def one(i: int):
        try:
            backend.infer("cam", {"pixels": pixels(i, 1, 256, 256)}, ["logits"])
            return "ok"
        except ServingError as err:
            return err.code
    with ThreadPoolExecutor(48) as pool:  # queue 16 + one batch of 8 executing < 48 in flight
        codes = list(pool.map(one, range(48)))
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) > 0 and codes.count("ok") > 0
    assert set(codes) <= {"ok", grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_server_down_is_unavailable_and_not_ready():
    down = TritonBackend(f"127.0.0.1:{free_port()}", health_timeout=0.5, timeout=1.0)
    try:
        assert not down.ready()
        for call in (down.models, lambda: down.infer("seg", {"pixels": pixels(0, 1, 64, 64)}, ["mask"])):
            with pytest.raises(ServingError) as e:
                call()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        down.close()


def test_tritons_own_errors_map_to_their_status(triton_server):
    """What Triton itself answers (not weakseg's catalogue check): unknown model or version NOT_FOUND."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from serving.backends.triton import serving_error

    client = grpcclient.InferenceServerClient(triton_server.url)
    x = grpcclient.InferInput("pixels", [1, 64, 64, 3], "UINT8")
    x.set_data_from_numpy(pixels(0, 1, 64, 64))
    try:
        for name, version in (("nope", ""), ("seg", "7")):
            with pytest.raises(InferenceServerException) as e:
                client.infer(name, [x], model_version=version)
            assert serving_error(e.value, name).code == grpc.StatusCode.NOT_FOUND, e.value.message()
    finally:
        client.close()
