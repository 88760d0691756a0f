"""Optional API-key / bearer-token authentication for every RPC except health checks, and TLS credentials."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def _key_lines(path: str | Path) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    if not keys:
        raise ValueError(f"{path}: no API keys in the file")
    return keys


def read_keys(path: str | Path) -> frozenset[str]:
    """API keys from a file, one per line (blank lines and # comments ignored)."""
    return frozenset(_key_lines(path))


def first_key(path: str | Path) -> str:
    """The first key of such a file (what a client sends)."""
    return _key_lines(path)[0]


def presented_key(metadata: Iterable[tuple[str, str]]) -> str | None:
    """The key a caller sent: `authorization: Bearer <key>` or `x-api-key: <key>`."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
        if key == "x-api-key" and isinstance(value, str):
            return value.strip()
    return None


class ApiKeyInterceptor(grpc.ServerInterceptor):
    """Answers UNAUTHENTICATED unless the call carries one of the keys; health checks are exempt."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(k.encode() for k in keys)
        if not self._keys:
            raise ValueError("an API-key interceptor needs at least one key")

    def _allowed(self, key: str | None) -> bool:
        if key is None:
            return False
        sent = key.encode()
        return any(hmac.compare_digest(sent, k) for k in self._keys)  # constant time per key

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method or ""
        if (
            handler is None
            or method.startswith(EXEMPT_PREFIXES)
            or self._allowed(presented_key(handler_call_details.invocation_metadata or ()))
        ):
            return handler
        return _denying(handler)


_DENIED = "missing or unknown credentials: send 'authorization: Bearer <key>' or 'x-api-key: <key>'"


def _deny(request, context):
    context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)


def _deny_stream(request, context):
    context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
    yield  # pragma: no cover - abort raises


def _denying(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""
    codec = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_deny, **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_deny_stream, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_deny, **codec)
    return grpc.stream_stream_rpc_method_handler(_deny_stream, **codec)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the server's TLS identity; client_ca turns on mutual TLS (client certificates required)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """grpc server credentials from the files."""
        pairs = [(self.key.read_bytes(), self.cert.read_bytes())]
        if self.client_ca is None:
            return grpc.ssl_server_credentials(pairs)
        return grpc.ssl_server_credentials(
            pairs, root_certificates=self.client_ca.read_bytes(), require_client_auth=True
        )
