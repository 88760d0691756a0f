"""A small client of the weakseg.v1 API: channel setup (message limits, TLS, API key) and image requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.server import MiB, message_options


@dataclass(frozen=True)
class ClientOptions:
    """How to reach a server."""

    address: str = "127.0.0.1:8001"
    api_key: str | None = None
    tls_ca: Path | None = None  # server CA: turns TLS on
    tls_cert: Path | None = None  # client certificate and key, for mutual TLS
    tls_key: Path | None = None
    max_message_bytes: int = 64 * MiB
    timeout_s: float = 60.0


def channel(options: ClientOptions) -> grpc.Channel:
    """An insecure or TLS channel with raised message limits."""
    opts = message_options(options.max_message_bytes)
    if options.tls_ca is None:
        return grpc.insecure_channel(options.address, options=opts)
    creds = grpc.ssl_channel_credentials(
        root_certificates=options.tls_ca.read_bytes(),
        private_key=options.tls_key.read_bytes() if options.tls_key else None,
        certificate_chain=options.tls_cert.read_bytes() if options.tls_cert else None,
    )
    return grpc.secure_channel(options.address, creds, options=opts)


def call_metadata(options: ClientOptions) -> tuple[tuple[str, str], ...]:
    """Metadata carrying the API key, if any."""
    return (("authorization", f"Bearer {options.api_key}"),) if options.api_key else ()


def image_message(path: Path) -> pb.Image:
    """An Image message with a file's encoded bytes (the server decodes PNG and JPEG)."""
    return pb.Image(encoded=Path(path).read_bytes())


class Client:
    """Calls the domain API with the options' credentials and deadline."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._channel = channel(options)
        self.stub = pb_grpc.SegmentationServiceStub(self._channel)

    def call(self, rpc: str, request):
        """Invoke one RPC by name (Segment, Explain, Overlay, ListModels, GetModelMetadata)."""
        return getattr(self.stub, rpc)(request, timeout=self.options.timeout_s, metadata=call_metadata(self.options))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


def wait_until_serving(address: str, timeout_s: float = 120.0, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll grpc.health.v1 (service "") at address until SERVING; TimeoutError after timeout_s, RuntimeError if not alive()."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            if not alive():
                raise RuntimeError(f"{address}: the server exited before it was serving")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address}: not SERVING after {timeout_s:.0f} s")
            time.sleep(0.2)
