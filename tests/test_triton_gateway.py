"""weakseg as the gateway in front of a real Triton: `WeaksegServer` over `TritonBackend`, called over loopback
gRPC through the weakseg.v1 API and through KServe v2 with NVIDIA's tritonclient; answers equal onnxruntime on
the same model.onnx, gradient methods answer UNIMPLEMENTED, health follows Triton."""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.backends.triton import TritonBackend
from tests.serving_repo import ort_run, raw_image, running_server

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def gateway(triton_server):
    """A weakseg server on a free loopback port forwarding to the test Triton."""
    with running_server(TritonBackend(triton_server.url, timeout=60.0)) as server:
        yield server


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(11).integers(0, 256, size=(72, 88, 3), dtype=np.uint8)


def test_segment_and_explain_cam_through_triton(gateway, triton_models, image):
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.SegmentationServiceStub(channel)
        r = stub.Segment(pb.SegmentRequest(model="seg", image=raw_image(image), mask_format=pb.MASK_FORMAT_RAW,
                                           request_id="via-triton"))
        assert (r.header.model, r.header.request_id, r.header.backend) == ("seg", "via-triton", "triton")
        ref = ort_run(triton_models.onnx_repo, "seg", image[None])
        np.testing.assert_array_equal(np.frombuffer(r.mask_raw, np.uint8).reshape(72, 88), ref["mask"][0])
        explained = stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(image), target_classes=[1]))
        cams = ort_run(triton_models.onnx_repo, "cam", image[None])["cams"][0, 0]  # class id 1 = first class
        got = np.frombuffer(explained.maps[0].data, np.uint8).reshape(72, 88).astype(np.int16)
        assert explained.maps[0].class_id == 1
        assert np.abs(got - np.rint(cams * 255)).max() <= 1  # uint8 quantisation of the same map
        with pytest.raises(grpc.RpcError) as e:
            stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(image), method="gradcam", target_classes=[1]))
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        listed = stub.ListModels(pb.ListModelsRequest())
        assert listed.backend == "triton" and sorted(m.name for m in listed.models) == ["cam", "seg"]


def test_kserve_infer_through_weakseg_equals_onnxruntime(gateway, triton_models, image):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.port}")
    try:
        assert client.is_server_ready() and client.is_model_ready("seg")
        x = grpcclient.InferInput("pixels", [1, 72, 88, 3], "UINT8")
        x.set_data_from_numpy(image[None])
        out = client.infer("seg", [x], outputs=[grpcclient.InferRequestedOutput("logits")])
        ref = ort_run(triton_models.onnx_repo, "seg", image[None])
        assert np.abs(out.as_numpy("logits") - ref["logits"]).max() < 1e-4
    finally:
        client.close()


def test_readiness_follows_triton_down_and_back(triton_models, triton_env, tmp_path):
    """A Triton of its own: stopped, the backend is not ready and infer is UNAVAILABLE, the gateway's health
    turns NOT_SERVING; restarted on the same port, both recover without restarting weakseg."""
    import time

    from serving.backends.base import ServingError
    from tests.triton_server import TritonServer

    triton = TritonServer(triton_models.python_repo, tmp_path / "triton.log", triton_env).start()
    backend = TritonBackend(triton.url, timeout=30.0, health_timeout=1.0)
    x = {"pixels": np.zeros((1, 64, 64, 3), np.uint8)}

    def health(port: int) -> int:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

    def wait_for(port: int, status: int, seconds: float = 20.0) -> int:
        deadline = time.monotonic() + seconds
        while (now := health(port)) != status and time.monotonic() < deadline:
            time.sleep(0.1)
        return now

    try:
        with running_server(backend) as gateway:
            assert wait_for(gateway.port, health_pb2.HealthCheckResponse.SERVING) == health_pb2.HealthCheckResponse.SERVING
            triton.stop()
            assert not backend.ready()
            with pytest.raises(ServingError) as e:
                backend.infer("seg", x, ["mask"])
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
            assert wait_for(gateway.port, health_pb2.HealthCheckResponse.NOT_SERVING) == health_pb2.HealthCheckResponse.NOT_SERVING
            time.sleep(3)  # down long enough for gRPC's reconnect backoff to grow to its cap
            triton.start(same_ports=True)
            deadline = time.monotonic() + 5  # the backoff cap (2 s) plus slack
            while not backend.ready() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert backend.ready() and backend.infer("seg", x, ["mask"])["mask"].shape == (1, 64, 64)
            assert wait_for(gateway.port, health_pb2.HealthCheckResponse.SERVING) == health_pb2.HealthCheckResponse.SERVING
    finally:
        triton.stop()
