"""The embedded backend: onnxruntime in this process over a model repository written by `weakseg export`,
one dynamic batcher per model, warmed up before the server reports ready.

Each `<repo>/<name>/config.pbtxt` is parsed into Triton's ModelConfig, so the scheduling knobs
(max batch, queue delay, bounded queue, instance count, warm-up) are the ones Triton would use.
The latest numeric version folder holding `model.onnx` is served. CUDA provider when asked for and
present, else CPU. Models with max_batch_size 0 (detectors: one image per run, no batch dimension) go
through the same bounded queue one request at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import text_format
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument
from tritonclient.grpc import model_config_pb2

from serving.backends.base import Backend, ModelInfo, ServingError, invalid
from serving.backends.model_config import KSERVE_NUMPY, check_inputs, info_from_config, kserve_datatype
from serving.batching import BatchingOptions, DynamicBatcher
from weakseg.export.runtime import ort_session, providers_for
from weakseg.export.triton_config import CHECKPOINT_FILE, LABELS_FILE

ModelObserveFn = Callable[[str, int, list[float]], None]  # (model, batch size, queue seconds per request)


class RepositoryError(Exception):
    """The model repository cannot be served (missing folder, bad config.pbtxt, no model.onnx)."""


def read_config(entry: Path) -> model_config_pb2.ModelConfig:
    """Parse <entry>/config.pbtxt into Triton's ModelConfig; RepositoryError names the file if it fails."""
    path = entry / "config.pbtxt"
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (OSError, text_format.ParseError) as e:
        raise RepositoryError(f"{path}: {e}") from e


def latest_version(entry: Path, filename: str = "model.onnx") -> str:
    """The highest numeric version folder of an entry that holds `filename`."""
    versions = sorted(
        int(p.name) for p in entry.iterdir() if p.is_dir() and p.name.isdigit() and (p / filename).is_file()
    )
    if not versions:
        raise RepositoryError(f"{entry}: no version folder with {filename}")
    return str(versions[-1])


def model_info(entry: Path, config: model_config_pb2.ModelConfig, version: str) -> ModelInfo:
    """ModelInfo of a repository entry (labels from the `classes` parameter, else labels.txt)."""
    labels = None
    if "classes" not in config.parameters and (entry / LABELS_FILE).is_file():
        labels = (entry / LABELS_FILE).read_text().splitlines()
    checkpoint = entry / CHECKPOINT_FILE
    info = info_from_config(config, version, labels=labels, checkpoint=checkpoint if checkpoint.is_file() else None)
    if info is None:
        raise RepositoryError(
            f"{entry / 'config.pbtxt'}: not a weakseg export (parameters model_kind = segmenter, "
            "classifier, detector or instance, and classes or labels.txt, are needed)"
        )
    if not info.name:
        info = replace(info, name=entry.name)
    return info


class _LoadedModel:
    def __init__(
        self,
        info: ModelInfo,
        config: model_config_pb2.ModelConfig,
        session,
        batcher: DynamicBatcher,
        output_names: list[str],
    ) -> None:
        self.info, self.config, self.session, self.batcher, self.output_names = (
            info,
            config,
            session,
            batcher,
            output_names,
        )


class EmbeddedBackend(Backend):
    """onnxruntime sessions over a model repository, with dynamic batching and warm-up."""

    name = "embedded"
    supports_gradients = True

    def __init__(
        self,
        repo: str | Path,
        *,
        device: str = "auto",
        threads: int | None = None,
        batching: BatchingOptions | None = None,
        models: Sequence[str] = (),
        spin_wait: bool | None = None,
    ) -> None:
        """Load every entry of `repo` (or only `models`); `batching` overrides each config's knobs.

        spin_wait: onnxruntime's idle-thread busy wait (None = its default, on); see weakseg.export.runtime.
        """
        self.repo = Path(repo)
        if not self.repo.is_dir():
            raise RepositoryError(f"{self.repo}: model repository folder not found")
        entries = sorted(p for p in self.repo.iterdir() if (p / "config.pbtxt").is_file())
        if models:
            missing = set(models) - {p.name for p in entries}
            if missing:
                raise RepositoryError(f"{self.repo}: no entries named {sorted(missing)}")
            entries = [p for p in entries if p.name in models]
        if not entries:
            raise RepositoryError(
                f"{self.repo}: no model entries (folders with config.pbtxt); run `weakseg export` first"
            )
        try:
            self._providers = providers_for(device)
        except ValueError as e:
            raise RepositoryError(str(e)) from e
        self._threads, self._device, self._spin = threads, device, spin_wait
        self._models: dict[str, _LoadedModel] = {}
        self._ready = threading.Event()
        self._observe: ModelObserveFn | None = None
        try:
            for entry in entries:
                loaded = self._load(entry, batching)
                self._models[loaded.info.name] = loaded
            for loaded in self._models.values():
                self._warm_up(loaded)
        except Exception:
            self.close()
            raise
        self._ready.set()

    def _load(self, entry: Path, batching: BatchingOptions | None) -> _LoadedModel:
        config = read_config(entry)
        version = latest_version(entry)
        info = model_info(entry, config, version)
        try:
            session = ort_session(
                (entry / version / "model.onnx").read_bytes(), self._providers, self._threads, self._spin
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise RepositoryError(f"{entry / version / 'model.onnx'}: onnxruntime cannot load it ({e})") from e
        if self._device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise RepositoryError(
                f"{entry.name}: the CUDA provider failed to start (see onnxruntime's message); use --device cpu"
            )
        names = [o.name for o in session.get_outputs()]
        if batching is None:
            queue = config.dynamic_batching.default_queue_policy.max_queue_size or 64
            workers = sum(g.count or 1 for g in config.instance_group) or 1
            batching = BatchingOptions(
                max_batch_size=max(1, config.max_batch_size),
                max_queue_delay_s=config.dynamic_batching.max_queue_delay_microseconds / 1e6,
                max_queue_size=queue,
                workers=workers,
            )
        unbatched = config.max_batch_size == 0
        if unbatched:  # one image per run: the batcher queues requests one at a time under a leading axis
            batching = replace(batching, max_batch_size=1)

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if unbatched:
                outputs = session.run(names, {k: v[0] for k, v in inputs.items()})
                return {name: out[None] for name, out in zip(names, outputs, strict=True)}
            return dict(zip(names, session.run(names, inputs), strict=True))

        def hook(rows: int, waits: list[float], _name: str = info.name) -> None:
            if self._observe is not None:
                self._observe(_name, rows, waits)

        return _LoadedModel(info, config, session, DynamicBatcher(info.name, run, batching, hook), names)

    @staticmethod
    def _warm_up(loaded: _LoadedModel) -> None:
        for sample in loaded.config.model_warmup:
            inputs = {}
            for name, spec in sample.inputs.items():
                dtype = KSERVE_NUMPY[kserve_datatype(spec.data_type)]
                batch = (max(1, sample.batch_size),) if loaded.config.max_batch_size > 0 else ()
                inputs[name] = np.zeros((*batch, *spec.dims), dtype=dtype)
            loaded.session.run(loaded.output_names, inputs)

    def set_batch_observer(self, observe: ModelObserveFn) -> None:
        """Report every batch the dynamic batchers form (the server's metrics)."""
        self._observe = observe

    def models(self) -> list[ModelInfo]:
        """Every loaded model."""
        return [m.info for m in self._models.values()]

    def ready(self) -> bool:
        """True once every model is loaded and warmed up (and until close)."""
        return self._ready.is_set()

    def queued(self, name: str) -> int:
        """Requests waiting in a model's batcher."""
        return self._models[name].batcher.queued()

    def infer(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str],
        *,
        version: str = "",
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Batched forward pass through the model's dynamic batcher, within `timeout` seconds."""
        info = self.model(name, version)
        loaded = self._models[info.name]
        unknown = set(outputs) - set(loaded.output_names)
        if unknown:
            raise invalid(f"model {name!r} has no outputs {sorted(unknown)} (outputs: {loaded.output_names})")
        check_inputs(info, inputs)
        if timeout is not None and timeout <= 0:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline already passed")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not info.batched:
            inputs = {k: v[None] for k, v in inputs.items()}
        future = loaded.batcher.submit(inputs, deadline)
        try:
            result = future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"model {name!r} did not answer within the deadline"
            ) from None
        except (OrtInvalidArgument, OrtFail) as e:  # a shape the graph cannot take, for instance
            raise invalid(
                f"model {name!r} rejected the input ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from e
        if not info.batched:
            result = {k: v[0] for k, v in result.items()}
        return {k: result[k] for k in (outputs or loaded.output_names)}

    def close(self) -> None:
        """Stop accepting work, finish what is queued."""
        self._ready.clear()
        for loaded in self._models.values():
            loaded.batcher.close(timeout=30)
