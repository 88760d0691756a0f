"""What every RPC handler shares: the request id, status-code mapping, metrics and one structured log line.

Handlers raise ServingError for expected failures; anything else is logged with its traceback and answered
INTERNAL with the request id (never the exception text, which may hold paths or data). Request metadata is
never logged (it carries credentials).
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from serving.backends.base import ServingError
from serving.metrics import ServingMetrics

log = logging.getLogger("weakseg.serving")
REQUEST_ID_KEY = "x-request-id"


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, message and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO") -> None:
    """Send weakseg.serving's structured logs to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def request_id(request: Any, context: grpc.ServicerContext) -> str:
    """The request's own id, else the x-request-id metadata, else a new one (at most 128 characters)."""
    rid = getattr(request, "request_id", "") or getattr(request, "id", "")
    if not rid:
        rid = dict(context.invocation_metadata() or ()).get(REQUEST_ID_KEY, "")
    return str(rid)[:128] or uuid.uuid4().hex


class Malformed:
    """Stands in for a request whose bytes do not parse as the RPC's message."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def ByteSize(self) -> int:  # the protobuf spelling, for metrics
        return 0


def _tolerant(deserializer: Callable):
    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as e:  # protobuf DecodeError and friends
            return Malformed(e)

    return parse


class MalformedRequestInterceptor(grpc.ServerInterceptor):
    """Lets unparsable request bytes reach the `rpc` wrapper (INVALID_ARGUMENT) instead of gRPC's INTERNAL."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = prefixes

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if (
            handler is None
            or not handler.unary_unary
            or not (handler_call_details.method or "").startswith(self.prefixes)
        ):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            handler.unary_unary, _tolerant(handler.request_deserializer), handler.response_serializer
        )


def time_left(context: grpc.ServicerContext) -> float | None:
    """Seconds until the call's deadline, or None when the client set none."""
    left = context.time_remaining()
    return None if left is None or left > 1e7 else max(0.0, left)


def _size(message: Any) -> int:
    try:
        return message.ByteSize()
    except AttributeError:
        return 0


def rpc(name: str) -> Callable:
    """Decorate a servicer method `f(self, request, context, rid)`; the servicer has `metrics` and may have `model_of`."""

    def wrap(f: Callable) -> Callable:
        @functools.wraps(f)
        def handler(self, request, context: grpc.ServicerContext):
            t0 = time.perf_counter()
            rid = request_id(request, context)
            context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
            code, message, response = grpc.StatusCode.OK, "", None
            try:
                if isinstance(request, Malformed):
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"request bytes do not parse as the {name} request message ({request.error})",
                    )
                response = f(self, request, context, rid)
            except ServingError as e:
                code, message = e.code, e.message
            except Exception:
                log.exception("unexpected error", extra={"fields": {"rpc": name, "request_id": rid}})
                code, message = grpc.StatusCode.INTERNAL, f"internal error (request id {rid})"
            seconds = time.perf_counter() - t0
            metrics: ServingMetrics = self.metrics
            metrics.observe_rpc(name, code.name, seconds, _size(request), _size(response))
            fields = {
                "rpc": name,
                "request_id": rid,
                "code": code.name,
                "ms": round(seconds * 1000, 2),
                "model": getattr(request, "model", "")
                or getattr(request, "name", "")
                or getattr(request, "model_name", ""),
            }
            if message:
                fields["error"] = message[:300]
            log.info("rpc", extra={"fields": fields})
            if code is not grpc.StatusCode.OK:
                context.abort(code, message)
            return response

        return handler

    return wrap
