"""Prometheus metrics of the serving tier, in a registry of their own, exposed on an HTTP port."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BYTES_BUCKETS = tuple(2**k for k in range(8, 29, 2))


class ServingMetrics:
    """Latency per RPC, status codes, payload bytes, queue time and batch size."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._http: WSGIServer | None = None
        r = self.registry
        self.latency = Histogram(
            "weakseg_rpc_latency_seconds", "RPC handling time", ["rpc"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.requests = Counter("weakseg_rpc_total", "RPCs answered, by status code", ["rpc", "code"], registry=r)
        self.errors = Counter(
            "weakseg_rpc_errors_total", "RPCs answered with a status other than OK", ["rpc", "code"], registry=r
        )
        self.payload = Histogram(
            "weakseg_rpc_payload_bytes",
            "serialized message size",
            ["rpc", "direction"],
            buckets=_BYTES_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "weakseg_queue_seconds",
            "time a request waited in the dynamic batcher",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "weakseg_batch_size",
            "rows per forward pass",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=r,
        )

    def observe_rpc(self, rpc: str, code: str, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Record one answered RPC."""
        self.latency.labels(rpc).observe(seconds)
        self.requests.labels(rpc, code).inc()
        if code != "OK":
            self.errors.labels(rpc, code).inc()
        self.payload.labels(rpc, "in").observe(bytes_in)
        if bytes_out:
            self.payload.labels(rpc, "out").observe(bytes_out)

    def observe_batch(self, model: str, rows: int, waits: list[float]) -> None:
        """Record one forward pass of the dynamic batcher."""
        self.batch.labels(model).observe(rows)
        for w in waits:
            self.queue.labels(model).observe(w)

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose /metrics on host:port (0 = any free port); return the port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_address[1]

    def close(self) -> None:
        """Stop the HTTP endpoint if one runs."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
