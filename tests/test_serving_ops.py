"""Operations: API-key auth (health exempt), TLS and mutual TLS, overload answers RESOURCE_EXHAUSTED, deadlines,
health transitions on start and graceful shutdown, Prometheus metrics."""

import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.auth import TlsFiles
from serving.backends.embedded import EmbeddedBackend
from serving.batching import BatchingOptions
from tests.serving_repo import raw_image, running_server

IMAGE = np.random.default_rng(5).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def segment(channel, metadata=(), timeout=30, size=48):
    image = IMAGE if size == 48 else np.zeros((size, size, 3), np.uint8)
    return pb_grpc.SegmentationServiceStub(channel).Segment(pb.SegmentRequest(model="seg", image=raw_image(image)),
                                                            metadata=metadata, timeout=timeout)


def health_status(channel, service=""):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_api_keys_bearer_or_header_and_health_is_exempt(serving_repo):
    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1), api_keys=frozenset({"s3cret", "other"})) as s:
        ch = grpc.insecure_channel(f"127.0.0.1:{s.port}")
        for metadata in ((), (("authorization", "Bearer wrong"),), (("x-api-key", "s3cre"),)):
            with pytest.raises(grpc.RpcError) as e:
                segment(ch, metadata)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "s3cret" not in e.value.details()
        assert segment(ch, (("authorization", "Bearer s3cret"),)).header.model == "seg"
        assert segment(ch, (("x-api-key", "other"),)).header.model == "seg"
        assert health_status(ch) == SERVING  # no key needed
        ch.close()


def test_without_keys_no_auth_is_needed(serving_repo):
    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1)) as s:
        ch = grpc.insecure_channel(f"127.0.0.1:{s.port}")
        assert segment(ch).height == 48
        ch.close()


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=weakseg test CA", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    return d


def _tls_channel(port, pki, client_cert=False):
    creds = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / "client.key").read_bytes() if client_cert else None,
        (pki / "client.pem").read_bytes() if client_cert else None)
    return grpc.secure_channel(f"localhost:{port}", creds)


def test_tls_and_mutual_tls(serving_repo, pki):
    tls = TlsFiles(pki / "server.pem", pki / "server.key")
    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1), tls=tls) as s:
        ch = _tls_channel(s.port, pki)
        assert segment(ch).height == 48
        ch.close()
        plain = grpc.insecure_channel(f"127.0.0.1:{s.port}")
        with pytest.raises(grpc.RpcError) as e:
            segment(plain, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        plain.close()
    mtls = TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1), tls=mtls) as s:
        with pytest.raises(grpc.RpcError) as e:
            segment(_tls_channel(s.port, pki, client_cert=False), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert segment(_tls_channel(s.port, pki, client_cert=True)).height == 48


def test_overload_answers_resource_exhausted_and_recovers(serving_repo):
    backend = EmbeddedBackend(serving_repo, device="cpu", threads=1, models=["seg"],
                              batching=BatchingOptions(max_batch_size=1, max_queue_size=1))
    with running_server(backend) as s:
        ch = grpc.insecure_channel(f"127.0.0.1:{s.port}")
        stub = pb_grpc.SegmentationServiceStub(ch)
        big = pb.SegmentRequest(model="seg", image=raw_image(np.zeros((384, 384, 3), np.uint8)))
        futures = [stub.Segment.future(big, timeout=60) for _ in range(12)]
        codes = []
        for f in futures:
            try:
                f.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert segment(ch).height == 48  # serves again once the burst is over
        ch.close()


def test_deadline_exceeded(serving_repo):
    backend = EmbeddedBackend(serving_repo, device="cpu", threads=1, models=["seg"],
                              batching=BatchingOptions(max_batch_size=1, max_queue_size=8))
    with running_server(backend) as s:
        ch = grpc.insecure_channel(f"127.0.0.1:{s.port}")
        with pytest.raises(grpc.RpcError) as e:
            segment(ch, timeout=0.005, size=512)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert segment(ch).height == 48
        ch.close()


def test_health_serving_after_start_not_serving_during_graceful_shutdown(serving_repo):
    backend = EmbeddedBackend(serving_repo, device="cpu", threads=1, models=["seg"])
    from serving.server import ServerConfig, WeaksegServer

    server = WeaksegServer(backend, ServerConfig(port=0, grace_s=10.0, drain_s=1.5, health_poll_s=0.1))
    assert server.health is not None
    port = server.start()
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    assert health_status(ch) == SERVING and health_status(ch, "weakseg.v1.SegmentationService") == SERVING
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.3)
    assert health_status(ch) == NOT_SERVING and health_status(ch, "inference.GRPCInferenceService") == NOT_SERVING
    assert segment(ch).height == 48  # requests during the drain are still answered
    stopper.join(30)
    with pytest.raises(grpc.RpcError):
        segment(ch, timeout=2)
    assert not backend.ready()
    ch.close()


def test_in_flight_requests_finish_during_shutdown(serving_repo):
    backend = EmbeddedBackend(serving_repo, device="cpu", threads=1, models=["seg"],
                              batching=BatchingOptions(max_batch_size=1, max_queue_size=16))
    from serving.server import ServerConfig, WeaksegServer

    server = WeaksegServer(backend, ServerConfig(port=0, grace_s=30.0))
    port = server.start()
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.SegmentationServiceStub(ch)
    futures = [stub.Segment.future(pb.SegmentRequest(model="seg", image=raw_image(np.zeros((256, 256, 3), np.uint8))),
                                   timeout=60) for _ in range(6)]
    time.sleep(0.2)
    server.stop()
    assert [f.result().height for f in futures] == [256] * 6
    ch.close()


def test_prometheus_metrics(serving_repo):
    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1, models=["seg"]), metrics_port=0) as s:
        ch = grpc.insecure_channel(f"127.0.0.1:{s.port}")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: segment(ch), range(8)))
        with pytest.raises(grpc.RpcError):
            pb_grpc.SegmentationServiceStub(ch).Segment(pb.SegmentRequest(model="nope", image=raw_image(IMAGE)))
        text = urllib.request.urlopen(f"http://127.0.0.1:{s.metrics_port}/metrics", timeout=5).read().decode()
        ch.close()
    assert 'weakseg_rpc_latency_seconds_count{rpc="Segment"} 9.0' in text
    assert 'weakseg_rpc_errors_total{code="NOT_FOUND",rpc="Segment"} 1.0' in text
    assert 'weakseg_rpc_total{code="OK",rpc="Segment"} 8.0' in text
    assert 'weakseg_batch_size_count{model="seg"}' in text and 'weakseg_queue_seconds_count{model="seg"} 8.0' in text
    assert 'weakseg_rpc_payload_bytes_count{direction="in",rpc="Segment"} 9.0' in text


def test_server_reflection_lists_and_describes_the_services(serving_repo):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1, models=["seg"])) as s:
        ch = grpc.insecure_channel(f"127.0.0.1:{s.port}")
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"weakseg.v1.SegmentationService", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(db)
        segment = pool.FindServiceByName("weakseg.v1.SegmentationService").FindMethodByName("Segment")
        assert segment.input_type.full_name == "weakseg.v1.SegmentRequest"
        assert "mask_raw" in pool.FindMessageTypeByName("weakseg.v1.SegmentResponse").fields_by_name
        ch.close()


@pytest.mark.parametrize("spin_wait", [False, True])
def test_onnxruntime_spin_wait_is_set_and_answers_are_unchanged(serving_repo, spin_wait):
    from tests.serving_repo import ort_run
    from weakseg.export.runtime import session_options

    entry = "session.intra_op.allow_spinning"
    assert session_options(2, spin_wait).get_session_config_entry(entry) == ("1" if spin_wait else "0")
    x = np.random.default_rng(3).integers(0, 256, size=(1, 40, 48, 3), dtype=np.uint8)
    backend = EmbeddedBackend(serving_repo, device="cpu", threads=1, spin_wait=spin_wait, models=["seg"])
    try:
        np.testing.assert_array_equal(backend.infer("seg", {"pixels": x}, ["mask"])["mask"], ort_run(serving_repo, "seg", x)["mask"])
    finally:
        backend.close()
