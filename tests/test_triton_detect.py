"""Detectors and Mask R-CNNs behind a real Triton (nvidia-pytriton's CPU tritonserver over the python-backend
variants of `weakseg export` entries, max_batch_size 0): tritonclient gets the outputs onnxruntime gives on the
same model.onnx, concurrent requests each get their own image's detections, a batched input is
INVALID_ARGUMENT, and weakseg's gateway (the triton backend) serves Detect from it."""

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.backends.triton import TritonBackend
from tests.detect_repo import build_detection_repo, ort_detect, scene
from tests.serving_repo import raw_image, running_server
from tests.triton_server import TritonServer, triton_paths
from weakseg.export.python_backend import write_python_backend_entry

pytestmark = pytest.mark.timeout(600)
OUTPUTS = {"det": ("boxes", "scores", "labels"), "inst": ("boxes", "scores", "labels", "masks")}


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """The exported det/inst entries (onnxruntime_onnx) and their python-backend variants."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("triton_detect")
    onnx_repo = build_detection_repo(root)
    python_repo = root / "python_repo"
    for name in OUTPUTS:
        write_python_backend_entry(onnx_repo / name, python_repo, onnx_threads=1)
    return onnx_repo, python_repo


@pytest.fixture(scope="module")
def server(repos, tmp_path_factory):
    """tritonserver over the python-backend detection repository; stopped at teardown."""
    s = TritonServer(repos[1], tmp_path_factory.mktemp("triton_detect_log") / "tritonserver.log", triton_paths())
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(server.url)
    yield c
    c.close()


def infer(client, name: str, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of `name` on one uint8 HxWx3 image, through tritonclient."""
    pixels = grpcclient.InferInput("pixels", list(image.shape), "UINT8")
    pixels.set_data_from_numpy(image)
    result = client.infer(name, [pixels], outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS[name]])
    return {n: result.as_numpy(n) for n in OUTPUTS[name]}


def assert_same_detections(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """Triton's outputs equal onnxruntime's on the same graph and image (the same CPU kernels)."""
    assert len(ref["boxes"]) > 0 and got["boxes"].shape == ref["boxes"].shape
    np.testing.assert_allclose(got["boxes"], ref["boxes"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["scores"], ref["scores"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got["labels"], ref["labels"])
    if "masks" in ref:
        assert np.mean((got["masks"] > 0.5) != (ref["masks"] > 0.5)) < 1e-3


def test_unbatched_entries_load_and_equal_onnxruntime(client, repos):
    onnx_repo = repos[0]
    for name in OUTPUTS:
        assert client.is_model_ready(name)
        assert client.get_model_config(name).config.max_batch_size == 0
        for image in (scene(5, 64, 80), scene(6, 96, 72)):  # two sizes, neither the traced one
            assert_same_detections(infer(client, name, image), ort_detect(onnx_repo, name, image))


def test_concurrent_requests_each_get_their_own_image(client, repos):
    images = [scene(10 + i, 64 + 8 * (i % 2), 64) for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda im: infer(client, "det", im), images))
    for image, got in zip(images, results, strict=True):
        assert_same_detections(got, ort_detect(repos[0], "det", image))


def test_a_batched_image_is_invalid_argument(client):
    pixels = grpcclient.InferInput("pixels", [1, 64, 64, 3], "UINT8")  # NHWC: the segmenters' layout, not this one's
    pixels.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(InferenceServerException) as e:
        client.infer("det", [pixels])
    assert "INVALID_ARGUMENT" in str(e.value.status()) and "[-1,-1,3]" in e.value.message()


def test_gateway_serves_detect_from_triton(server, repos):
    image = scene(5, 64, 80)
    with (
        running_server(TritonBackend(server.url, timeout=60.0)) as gateway,
        grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel,
    ):
        stub = pb_grpc.SegmentationServiceStub(channel)
        for name in OUTPUTS:
            ref = ort_detect(repos[0], name, image)
            r = stub.Detect(pb.DetectRequest(model=name, image=raw_image(image), mask_format=pb.MASK_FORMAT_RAW))
            assert r.header.backend == "triton" and r.has_masks == (name == "inst")
            boxes = np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in r.detections], np.float32)
            np.testing.assert_allclose(boxes, ref["boxes"], rtol=0, atol=1e-4)
            assert [d.class_id for d in r.detections] == ref["labels"].tolist()
            if name == "inst":
                raw = np.stack([np.frombuffer(d.mask_raw, np.uint8).reshape(64, 80) for d in r.detections])
                assert np.mean(raw != (ref["masks"] > 0.5)) < 1e-3
