"""The `triton` backend: forwards forward passes to a Triton Inference Server over gRPC (`tritonclient.grpc`).

weakseg is then the domain-API gateway in front of Triton. The catalogue is Triton's repository index plus
each model's config: kind and labels come from the `model_kind` and `classes` parameters that
`weakseg export` writes (models without them are not weakseg's and are left out), tensor specs and
max_batch_size from the config. Works the same over the onnxruntime_onnx entries (GPU deployments) and
their python-backend variants (weakseg.export.python_backend). Triton runs forward passes only, so
gradient methods are unavailable here (`supports_gradients = False`).

Errors come back as ServingError with the status a client should see: unknown model NOT_FOUND, bad input
INVALID_ARGUMENT, a full queue RESOURCE_EXHAUSTED (Triton says UNAVAILABLE "Exceeds maximum queue size"),
client deadline or Triton's queue timeout DEADLINE_EXCEEDED, an unreachable server UNAVAILABLE.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.backends.base import Backend, ModelInfo, ServingError, invalid
from serving.backends.model_config import check_inputs, info_from_config

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # images and masks exceed gRPC's 4 MiB default
# (substring of Triton's message, lower case) -> status; checked before Triton's own code, which is too coarse
# (a full queue and a stopped server both come back UNAVAILABLE)
_MESSAGE_CODES = (
    ("exceeds maximum queue size", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("request timeout expired", grpc.StatusCode.DEADLINE_EXCEEDED),
    ("deadline exceeded", grpc.StatusCode.DEADLINE_EXCEEDED),
    ("unknown model", grpc.StatusCode.NOT_FOUND),
    ("has no available versions", grpc.StatusCode.NOT_FOUND),
)


def serving_error(error: InferenceServerException, what: str) -> ServingError:
    """Map a tritonclient exception to a ServingError with the status code a weakseg client should get."""
    message = error.message() or str(error)
    status = (error.status() or "").rsplit(".", 1)[-1]
    code = getattr(grpc.StatusCode, status, grpc.StatusCode.UNKNOWN) if status else grpc.StatusCode.UNKNOWN
    lowered = message.lower()
    for fragment, mapped in _MESSAGE_CODES:
        if fragment in lowered:
            code = mapped
            break
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"Triton is unavailable ({message})"
    return ServingError(code, f"{what}: {message}")


class TritonBackend(Backend):
    """The models of one Triton server, reached over gRPC."""

    name = "triton"
    supports_gradients = False

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        health_timeout: float = 2.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        catalogue_ttl: float = 5.0,
        max_reconnect_backoff: float = 2.0,
        headers: dict[str, str] | None = None,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
    ) -> None:
        """Connect lazily to `url` (host:port of Triton's gRPC endpoint); nothing fails here if Triton is down yet.

        timeout: default per-request deadline (s); health_timeout: deadline of the readiness calls;
        max_message_bytes: gRPC send and receive limits; catalogue_ttl: how long the model list is reused;
        max_reconnect_backoff: cap (s) of gRPC's reconnect backoff, so a Triton that comes back is seen soon;
        headers: sent with every call; ssl and the PEM file paths: TLS (mTLS with key and chain) to Triton.
        """
        if max_message_bytes < 1 or timeout <= 0 or health_timeout <= 0:
            raise ValueError("max_message_bytes, timeout and health_timeout must be positive")
        self.url, self.timeout, self.health_timeout, self.catalogue_ttl = url, timeout, health_timeout, catalogue_ttl
        self.max_message_bytes, self._headers = max_message_bytes, dict(headers or {})
        self._client = grpcclient.InferenceServerClient(
            url,
            ssl=ssl,
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
            channel_args=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", max(100, int(max_reconnect_backoff * 1000))),
            ],
        )
        self._lock = threading.Lock()
        self._catalogue: list[ModelInfo] | None = None
        self._fetched_at = 0.0
        self._configs: dict[tuple[str, str], ModelInfo | None] = {}  # a loaded version's config does not change

    def _fetch_catalogue(self) -> list[ModelInfo]:
        """The weakseg models Triton has READY now (highest ready version of each), from index and configs."""
        index = self._client.get_model_repository_index(headers=self._headers, client_timeout=self.health_timeout)
        latest: dict[str, str] = {}
        for entry in index.models:
            if entry.state == "READY" and entry.version.isdigit():
                if entry.name not in latest or int(entry.version) > int(latest[entry.name]):
                    latest[entry.name] = entry.version
        self._configs = {k: v for k, v in self._configs.items() if latest.get(k[0]) == k[1]}
        found = []
        for key in sorted(latest.items()):
            if key not in self._configs:
                response = self._client.get_model_config(
                    *key, headers=self._headers, client_timeout=self.health_timeout
                )
                self._configs[key] = info_from_config(response.config, key[1])
            info = self._configs[key]
            if info is not None:
                found.append(info)
        return found

    def refresh(self, force: bool = True) -> list[ModelInfo]:
        """Re-read the catalogue from Triton (or reuse it within catalogue_ttl unless force)."""
        with self._lock:
            fresh = self._catalogue is not None and time.monotonic() - self._fetched_at < self.catalogue_ttl
            if fresh and not force and self._catalogue is not None:
                return list(self._catalogue)
            try:
                self._catalogue = self._fetch_catalogue()
            except InferenceServerException as e:
                if self._catalogue is None:
                    raise serving_error(e, f"model catalogue of Triton at {self.url}") from e
                return list(self._catalogue)  # Triton unreachable for a moment: keep the last catalogue
            self._fetched_at = time.monotonic()
            return list(self._catalogue)

    def models(self) -> list[ModelInfo]:
        """Every weakseg model Triton has ready (latest version of each); UNAVAILABLE if Triton was never reached."""
        return self.refresh(force=False)

    def model(self, name: str, version: str = "") -> ModelInfo:
        """The model called `name`; re-reads the catalogue once before answering NOT_FOUND."""
        try:
            return super().model(name, version)
        except ServingError as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
            self.refresh(force=True)
            return super().model(name, version)

    def ready(self) -> bool:
        """True when Triton is ready, serves at least one weakseg model, and every one of them is ready."""
        try:
            if not self._client.is_server_ready(headers=self._headers, client_timeout=self.health_timeout):
                return False
            with self._lock:
                self._catalogue, self._fetched_at = self._fetch_catalogue(), time.monotonic()
                catalogue = list(self._catalogue)
            return bool(catalogue) and all(
                self._client.is_model_ready(
                    m.name, m.version, headers=self._headers, client_timeout=self.health_timeout
                )
                for m in catalogue
            )
        except InferenceServerException:
            return False

    def infer(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str],
        *,
        version: str = "",
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """One Triton inference (shapes are checked by Triton); the requested outputs by name. Raises ServingError."""
        info = self.model(name, version)
        specs = {t.name: t for t in info.inputs}
        known = {t.name for t in info.outputs}
        unknown = [o for o in outputs if o not in known]
        if unknown or not outputs:
            raise invalid(f"model {name!r} has outputs {sorted(known)}; asked for {list(outputs)}")
        check_inputs(info, inputs)
        request = []
        for tensor_name, array in inputs.items():
            tensor = grpcclient.InferInput(tensor_name, list(array.shape), specs[tensor_name].datatype)
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            request.append(tensor)
        try:
            result = self._client.infer(
                name,
                request,
                model_version=version,
                outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                client_timeout=self.timeout if timeout is None else timeout,
                headers=self._headers,
            )
        except InferenceServerException as e:
            error = serving_error(e, f"model {name!r} on Triton")
            if error.code == grpc.StatusCode.NOT_FOUND:
                self.refresh(force=True)
            raise error from e
        return {o: result.as_numpy(o) for o in outputs}

    def close(self) -> None:
        """Close the gRPC channel."""
        self._client.close()
