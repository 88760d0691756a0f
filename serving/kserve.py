"""KServe v2 / Triton gRPC inference protocol (inference.GRPCInferenceService) over a Backend, with the stubs
that ship in tritonclient, so `tritonclient.grpc` and tools built on it work against weakseg.

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig, RepositoryIndex,
ModelInfer. The rest (shared memory, streaming, statistics, load/unload) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.backends.base import Backend, ModelInfo, invalid
from serving.backends.model_config import KSERVE_NUMPY, config_datatype
from serving.images import ImageLimits
from serving.metrics import ServingMetrics
from serving.rpc import rpc, time_left

SERVER_NAME = "weakseg"
_CONTENTS_FIELD = {
    "UINT8": "uint_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "BOOL": "bool_contents",
}


def input_array(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> np.ndarray:
    """A request tensor (raw_input_contents or typed contents) as a numpy array, validated against its shape."""
    if tensor.datatype not in KSERVE_NUMPY:
        raise invalid(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported "
            f"(supported: {', '.join(KSERVE_NUMPY)})"
        )
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise invalid(f"input {tensor.name!r}: shape {list(shape)} has negative dimensions")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    dtype = np.dtype(KSERVE_NUMPY[tensor.datatype])
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise invalid(
                f"input {tensor.name!r}: {len(raw)} raw bytes, but {tensor.datatype} {list(shape)} "
                f"needs {count * dtype.itemsize}"
            )
        array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
    else:
        field = _CONTENTS_FIELD.get(tensor.datatype)
        values = getattr(tensor.contents, field) if field else ()
        if len(values) != count:
            raise invalid(
                f"input {tensor.name!r}: {len(values)} values in contents, but shape {list(shape)} needs {count}"
            )
        array = np.asarray(values, dtype=dtype)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise invalid(f"input {tensor.name!r}: contains NaN or infinite values")
    return array.reshape(shape)


def _tensor_metadata(specs) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in specs
    ]


def model_config(info: ModelInfo) -> mc.ModelConfig:
    """A ModelConfig describing a loaded model (dims without the batch dimension)."""
    batched = info.max_batch_size > 0

    def dims(t) -> list[int]:
        return list(t.shape[1:] if batched else t.shape)

    config = mc.ModelConfig(name=info.name, platform=info.platform, max_batch_size=info.max_batch_size)
    for t in info.inputs:
        config.input.add(name=t.name, data_type=config_datatype(t.datatype), dims=dims(t))
    for t in info.outputs:
        config.output.add(name=t.name, data_type=config_datatype(t.datatype), dims=dims(t))
    config.parameters["model_kind"].string_value = info.kind
    config.parameters["classes"].string_value = json.dumps(list(info.labels))
    return config


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 over one backend; model names are the repository entry names."""

    def __init__(
        self,
        backend: Backend,
        metrics: ServingMetrics,
        version: str,
        accepting: Callable[[], bool],
        limits: ImageLimits = ImageLimits(),
    ) -> None:
        self.backend, self.metrics, self.version, self._accepting = backend, metrics, version, accepting
        self.limits = limits

    def _ready(self) -> bool:
        return self._accepting() and self.backend.ready()

    @rpc("ServerLive")
    def ServerLive(self, request, context, rid):
        """Live while the process serves RPCs."""
        return pb.ServerLiveResponse(live=True)

    @rpc("ServerReady")
    def ServerReady(self, request, context, rid):
        """Ready once every model is loaded and warmed up, until shutdown begins."""
        return pb.ServerReadyResponse(ready=self._ready())

    @rpc("ModelReady")
    def ModelReady(self, request, context, rid):
        """Ready if the model (and version, if given) is loaded and the server is ready."""
        known = any(m.name == request.name and request.version in ("", m.version) for m in self.backend.models())
        return pb.ModelReadyResponse(ready=known and self._ready())

    @rpc("ServerMetadata")
    def ServerMetadata(self, request, context, rid):
        """Server name and version."""
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=["model_configuration"])

    @rpc("ModelMetadata")
    def ModelMetadata(self, request, context, rid):
        """Versions, platform and tensors of a model (NOT_FOUND if unknown)."""
        info = self.backend.model(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=info.name,
            versions=[info.version],
            platform=info.platform,
            inputs=_tensor_metadata(info.inputs),
            outputs=_tensor_metadata(info.outputs),
        )

    @rpc("ModelConfig")
    def ModelConfig(self, request, context, rid):
        """The model's configuration (kind and classes in `parameters`)."""
        return pb.ModelConfigResponse(config=model_config(self.backend.model(request.name, request.version)))

    @rpc("RepositoryIndex")
    def RepositoryIndex(self, request, context, rid):
        """Every loaded model, READY."""
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=m.name, version=m.version, state="READY" if self.backend.ready() else "UNAVAILABLE"
                )
                for m in self.backend.models()
            ]
        )

    @rpc("ModelInfer")
    def ModelInfer(self, request: pb.ModelInferRequest, context, rid):
        """One inference; outputs as raw_output_contents in the order requested (all outputs if none named)."""
        info = self.backend.model(request.model_name, request.model_version)
        if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
            raise invalid(f"{len(request.raw_input_contents)} raw_input_contents for {len(request.inputs)} inputs")
        names = [t.name for t in request.inputs]
        if len(set(names)) != len(names):
            raise invalid(f"input names repeat: {names}")
        inputs = {
            t.name: input_array(t, request.raw_input_contents[i] if request.raw_input_contents else None)
            for i, t in enumerate(request.inputs)
        }
        for array in inputs.values():
            if array.ndim == 4 and array.shape[-1] == 3:  # NHWC images: the same size limits as the domain API
                self.limits.check(array.shape[1], array.shape[2])
            elif array.ndim == 3 and array.shape[-1] == 3 and not info.batched:  # one HWC image (detectors)
                self.limits.check(array.shape[0], array.shape[1])
        wanted = [o.name for o in request.outputs] or [t.name for t in info.outputs]
        outputs = self.backend.infer(
            info.name, inputs, wanted, version=request.model_version, timeout=time_left(context)
        )
        response = pb.ModelInferResponse(model_name=info.name, model_version=info.version, id=rid)
        dtypes = {t.name: t.datatype for t in info.outputs}
        for name in wanted:
            array = np.ascontiguousarray(outputs[name])
            response.outputs.add(name=name, datatype=dtypes[name], shape=list(array.shape))
            response.raw_output_contents.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        return response
