"""The weakseg gRPC server: the domain API, KServe v2, grpc.health.v1 and reflection on one port.

Health is NOT_SERVING until the backend reports every model loaded and warmed up, follows the backend's
readiness while running (a Triton behind us may go away), and turns NOT_SERVING as soon as shutdown
begins; in-flight requests then get `grace_s` seconds to finish.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2 as kserve_pb
from tritonclient.grpc import service_pb2_grpc as kserve_grpc

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.auth import ApiKeyInterceptor, TlsFiles
from serving.backends.base import Backend
from serving.domain import SegmentationService
from serving.explain import GradientExplainer, GradientLimits
from serving.images import ImageLimits
from serving.kserve import InferenceService
from serving.metrics import ServingMetrics
from serving.rpc import MalformedRequestInterceptor

DOMAIN_SERVICE = pb.DESCRIPTOR.services_by_name["SegmentationService"].full_name
KSERVE_SERVICE = kserve_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MiB = 1024 * 1024


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel/server options raising both message limits above gRPC's 4 MiB default."""
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]


@dataclass(frozen=True)
class ServerConfig:
    """Where and how the server listens, and what one request may cost."""

    host: str = "127.0.0.1"
    port: int = 8001  # 0 = any free port
    workers: int = 16  # RPC handler threads
    max_concurrent_rpcs: int | None = 64  # beyond this gRPC answers RESOURCE_EXHAUSTED
    max_message_bytes: int = 64 * MiB
    images: ImageLimits = field(default_factory=ImageLimits)
    gradients: GradientLimits = field(default_factory=GradientLimits)
    api_keys: frozenset[str] = frozenset()
    tls: TlsFiles | None = None
    metrics_port: int | None = None  # None = no /metrics endpoint; 0 = any free port
    metrics_host: str = "127.0.0.1"
    grace_s: float = 10.0  # in-flight requests get this long to finish after shutdown begins
    drain_s: float = 0.0  # NOT_SERVING this long before new RPCs are refused (lets load balancers notice)
    health_poll_s: float = 1.0


class WeaksegServer:
    """Owns the grpc.Server, the services, health and metrics for one backend."""

    def __init__(self, backend: Backend, config: ServerConfig = ServerConfig(), version: str = "") -> None:
        from weakseg import __version__

        self.backend, self.config = backend, config
        self.metrics = ServingMetrics()
        backend.set_batch_observer(self.metrics.observe_batch)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._stopping = threading.Event()
        interceptors: list[grpc.ServerInterceptor] = [ApiKeyInterceptor(config.api_keys)] if config.api_keys else []
        interceptors.append(MalformedRequestInterceptor((f"/{DOMAIN_SERVICE}/", f"/{KSERVE_SERVICE}/")))
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
            interceptors=interceptors,
            options=message_options(config.max_message_bytes),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        explainer = GradientExplainer(config.gradients)
        pb_grpc.add_SegmentationServiceServicer_to_server(
            SegmentationService(backend, self.metrics, config.images, explainer), self._server
        )
        kserve_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(
                backend, self.metrics, version or __version__, lambda: not self._stopping.is_set(), config.images
            ),
            self._server,
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self._set_health(False)
        reflection.enable_server_reflection(
            (DOMAIN_SERVICE, KSERVE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self._poller = threading.Thread(target=self._follow_readiness, name="health", daemon=True)

    def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", DOMAIN_SERVICE, KSERVE_SERVICE):
            self.health.set(service, status)

    def _follow_readiness(self) -> None:
        while not self._stopping.wait(self.config.health_poll_s):
            self._set_health(self.backend.ready())

    def start(self) -> int:
        """Bind, start serving, and mark healthy once the backend is ready; return the bound port."""
        address = f"{self.config.host}:{self.config.port}"
        if self.config.tls is not None:
            self.port = self._server.add_secure_port(address, self.config.tls.credentials())
        else:
            self.port = self._server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot listen on {address}")
        self._server.start()
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(self.config.metrics_port, self.config.metrics_host)
        self._set_health(self.backend.ready())
        self._poller.start()
        return self.port

    def stop(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING at once, refuse new RPCs, let in-flight ones finish within the grace period."""
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self.config.drain_s > 0:
            time.sleep(self.config.drain_s)
        self._server.stop(self.config.grace_s if grace_s is None else grace_s).wait()
        self.backend.close()
        self.metrics.close()

    def wait(self) -> None:
        """Block until the server stops."""
        self._server.wait_for_termination()
