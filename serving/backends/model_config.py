"""Triton ModelConfig messages -> ModelInfo, KServe v2 datatypes and input checks, shared by both backends.

A weakseg model's config carries its kind and labels in the `model_kind` and `classes` parameters
(written by `weakseg export`); tensor specs and max_batch_size come from the config itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2

from serving.backends.base import KINDS, ModelInfo, TensorMeta, invalid

KSERVE_NUMPY = {
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BOOL": np.bool_,
}


def kserve_datatype(data_type: int) -> str:
    """KServe v2 datatype name of a ModelConfig DataType (TYPE_FP32 -> FP32, TYPE_STRING -> BYTES)."""
    name = model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def config_datatype(kserve: str) -> int:
    """ModelConfig DataType of a KServe v2 datatype name (FP32 -> TYPE_FP32)."""
    return model_config_pb2.DataType.Value("TYPE_STRING" if kserve == "BYTES" else f"TYPE_{kserve}")


def info_from_config(
    config: model_config_pb2.ModelConfig,
    version: str,
    *,
    labels: list[str] | None = None,
    checkpoint: Path | None = None,
) -> ModelInfo | None:
    """ModelInfo of a weakseg export's config (labels from `classes`, else `labels`), or None if it is not one."""
    params = {k: v.string_value for k, v in config.parameters.items()}
    if params.get("model_kind") not in KINDS:
        return None
    if "classes" in params:
        try:
            labels = json.loads(params["classes"])
        except json.JSONDecodeError:
            return None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        return None
    batch = (-1,) if config.max_batch_size > 0 else ()

    def tensors(specs) -> tuple[TensorMeta, ...]:
        return tuple(
            TensorMeta(t.name, kserve_datatype(t.data_type), batch + tuple(int(d) for d in t.dims)) for t in specs
        )

    return ModelInfo(
        config.name,
        version,
        params["model_kind"],
        tuple(labels),
        tensors(config.input),
        tensors(config.output),
        int(config.max_batch_size),
        config.platform or config.backend,
        checkpoint,
    )


def check_inputs(info: ModelInfo, inputs: dict[str, np.ndarray]) -> None:
    """INVALID_ARGUMENT unless inputs match the model's names, data types and fixed dimensions."""
    expected = {t.name: t for t in info.inputs}
    if set(inputs) != set(expected):
        raise invalid(f"model {info.name!r} takes inputs {sorted(expected)}, got {sorted(inputs)}")
    for name, array in inputs.items():
        spec = expected[name]
        if spec.datatype not in KSERVE_NUMPY or array.dtype != np.dtype(KSERVE_NUMPY[spec.datatype]):
            raise invalid(f"input {name!r} of model {info.name!r} must be {spec.datatype}, got {array.dtype}")
        if array.ndim != len(spec.shape) or any(d not in (-1, s) for d, s in zip(spec.shape, array.shape, strict=True)):
            raise invalid(
                f"input {name!r} of model {info.name!r} has shape {list(array.shape)}, "
                f"expected {list(spec.shape)} (-1 = any)"
            )
