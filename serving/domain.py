"""The weakseg.v1 SegmentationService: Segment, Explain, Overlay, ListModels, GetModelMetadata over a Backend."""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc
import matplotlib
import numpy as np

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.backends.base import CLASSIFIER, SEGMENTER, Backend, ModelInfo, ServingError, TensorMeta, invalid
from serving.explain import GRADIENT_METHODS, GradientExplainer
from serving.images import ImageLimits, decode_encoded, decode_raw
from serving.metrics import ServingMetrics
from serving.rpc import rpc, time_left
from weakseg.data.classes import voc_palette
from weakseg.io import encode_png
from weakseg.report.overlay import heatmap_overlay, mask_overlay

METHODS = ("cam", *GRADIENT_METHODS)


def decode_image(image: pb.Image, limits: ImageLimits) -> np.ndarray:
    """The request image as uint8 HxWx3 RGB, or INVALID_ARGUMENT naming the problem."""
    which = image.WhichOneof("source")
    if which == "encoded":
        return decode_encoded(image.encoded, limits)
    if which == "raw":
        r = image.raw
        return decode_raw(r.data, r.height, r.width, r.channels, limits)
    raise invalid("image is missing: set image.encoded (PNG/JPEG bytes) or image.raw")


def softmax_peaks(logits: np.ndarray) -> np.ndarray:
    """Highest softmax probability of each class over the pixels of logits [C, H, W]."""
    e = np.subtract(logits, logits.max(axis=0), dtype=np.float32)  # one exp pass, in place: this runs per request
    np.exp(e, out=e)
    e /= e.sum(axis=0)
    return e.reshape(len(e), -1).max(axis=1)


def metadata_message(info: ModelInfo, methods: list[str]) -> pb.ModelMetadata:
    """The API's ModelMetadata of a loaded model."""

    def tensors(specs: Sequence[TensorMeta]) -> list[pb.TensorSpec]:
        return [pb.TensorSpec(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in specs]

    return pb.ModelMetadata(
        name=info.name,
        version=info.version,
        kind=info.kind,
        labels=list(info.labels),
        inputs=tensors(info.inputs),
        outputs=tensors(info.outputs),
        max_batch_size=info.max_batch_size,
        platform=info.platform,
        methods=methods,
    )


class SegmentationService(pb_grpc.SegmentationServiceServicer):
    """Domain API over one backend."""

    def __init__(
        self,
        backend: Backend,
        metrics: ServingMetrics,
        limits: ImageLimits = ImageLimits(),
        explainer: GradientExplainer | None = None,
    ) -> None:
        self.backend, self.metrics, self.limits = backend, metrics, limits
        self.explainer = explainer or GradientExplainer()
        self._palette = voc_palette()

    # -- helpers -------------------------------------------------------------------------------------------
    def _model(self, name: str, version: str, kind: str, rpc_name: str) -> ModelInfo:
        if not name:
            raise invalid("model is empty: name a model (ListModels lists them)")
        info = self.backend.model(name, version)
        if info.kind != kind:
            raise invalid(f"model {name!r} is a {info.kind}; {rpc_name} needs a {kind}")
        return info

    def _header(self, info: ModelInfo, rid: str) -> pb.ResponseHeader:
        return pb.ResponseHeader(model=info.name, model_version=info.version, request_id=rid, backend=self.backend.name)

    def methods(self, info: ModelInfo) -> list[str]:
        """Explain methods a model supports on this backend."""
        if info.kind != CLASSIFIER:
            return []
        gradients = self.backend.supports_gradients and info.checkpoint is not None
        return list(METHODS) if gradients else ["cam"]

    def _segment(self, request, context) -> tuple[ModelInfo, np.ndarray, np.ndarray, np.ndarray]:
        info = self._model(request.model, request.model_version, SEGMENTER, "Segment")
        image = decode_image(request.image, self.limits)
        out = self.backend.infer(
            info.name, {"pixels": image[None]}, ["logits", "mask"], version=info.version, timeout=time_left(context)
        )
        return info, image, out["logits"][0], out["mask"][0]

    def _explain(self, request, context) -> tuple[ModelInfo, np.ndarray, str, list[int], np.ndarray, np.ndarray]:
        """(model, image, method, 1-based class ids, sigmoid scores of all classes, maps [K,H,W] in [0,1])."""
        info = self._model(request.model, request.model_version, CLASSIFIER, "Explain")
        method = request.method or "cam"
        if method not in METHODS:
            raise invalid(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        n = len(info.labels)
        bad = [c for c in request.target_classes if not 1 <= c <= n]
        if bad:
            raise invalid(f"unknown class ids {bad}: model {info.name!r} has classes 1..{n} ({', '.join(info.labels)})")
        if method != "cam" and not self.backend.supports_gradients:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {method!r} needs gradients, which the {self.backend.name} backend cannot compute "
                "(Triton runs forward passes only); use method 'cam' or the embedded backend",
            )
        if method == "advcam":
            self.explainer.steps(request.advcam_steps)  # reject over-limit requests before any work
        image = decode_image(request.image, self.limits)
        outputs = ["logits", "cams"] if method == "cam" else ["logits"]
        out = self.backend.infer(
            info.name, {"pixels": image[None]}, outputs, version=info.version, timeout=time_left(context)
        )
        logits = out["logits"][0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits))
        if request.target_classes:
            ids = list(dict.fromkeys(request.target_classes))
        else:
            k = min(request.top_k or 1, n)
            ids = [int(i) + 1 for i in np.argsort(-logits, kind="stable")[:k]]
        index = [c - 1 for c in ids]
        if method == "cam":
            maps = out["cams"][0][index]
        else:
            maps = self.explainer.explain(info, method, image, index, request.advcam_steps, time_left(context))
        return info, image, method, ids, scores, np.clip(np.nan_to_num(maps), 0.0, 1.0)

    # -- RPCs ----------------------------------------------------------------------------------------------
    @rpc("Segment")
    def Segment(self, request: pb.SegmentRequest, context, rid: str) -> pb.SegmentResponse:
        """Label mask, classes present with pixel fractions, per-class scores."""
        info, image, logits, mask = self._segment(request, context)
        h, w = mask.shape
        counts = np.bincount(mask.ravel(), minlength=len(info.labels))
        peaks = softmax_peaks(logits)
        stats = [
            pb.ClassStat(
                class_id=c, label=info.labels[c], pixel_fraction=float(counts[c]) / mask.size, score=float(peaks[c])
            )
            for c in range(len(info.labels))
        ]
        present = sorted((s for s in stats if counts[s.class_id] > 0), key=lambda s: -s.pixel_fraction)
        response = pb.SegmentResponse(header=self._header(info, rid), height=h, width=w, present=present, scores=stats)
        if request.mask_format in (pb.MASK_FORMAT_PNG, pb.MASK_FORMAT_PNG_AND_RAW):
            response.mask_png = encode_png(mask, self._palette, compress_level=1)
        if request.mask_format in (pb.MASK_FORMAT_RAW, pb.MASK_FORMAT_PNG_AND_RAW):
            response.mask_raw = np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
        return response

    @rpc("Explain")
    def Explain(self, request: pb.ExplainRequest, context, rid: str) -> pb.ExplainResponse:
        """One attribution map per class."""
        if request.map_format not in (pb.MAP_FORMAT_UINT8, pb.MAP_FORMAT_FLOAT16):
            raise invalid(f"unknown map_format {request.map_format}")
        info, image, method, ids, scores, maps = self._explain(request, context)
        response = pb.ExplainResponse(
            header=self._header(info, rid),
            method=method,
            height=image.shape[0],
            width=image.shape[1],
            map_format=request.map_format,
        )
        for c, m in zip(ids, maps, strict=True):
            data = (
                np.rint(m * 255).astype(np.uint8) if request.map_format == pb.MAP_FORMAT_UINT8 else m.astype("<f2")
            ).tobytes()
            response.maps.add(class_id=c, label=info.labels[c - 1], score=float(scores[c - 1]), data=data)
        return response

    @rpc("Overlay")
    def Overlay(self, request: pb.OverlayRequest, context, rid: str) -> pb.OverlayResponse:
        """Attribution heat-map overlays (one PNG per class) or a mask overlay, for dashboards."""
        opacity = request.opacity if request.HasField("opacity") else 0.5
        if not (math.isfinite(opacity) and 0.0 <= opacity <= 1.0):
            raise invalid(f"opacity must be a number in [0, 1], got {opacity}")
        colormap = request.colormap or "jet"
        if colormap not in matplotlib.colormaps:
            raise invalid(f"unknown colormap {colormap!r} (matplotlib names, e.g. jet, viridis, inferno)")
        if request.kind == pb.OVERLAY_KIND_MASK:
            info, image, _, mask = self._segment(request, context)
            rendered = [
                pb.RenderedOverlay(class_id=0, label="mask", png=encode_png(mask_overlay(image, mask, opacity)))
            ]
        elif request.kind == pb.OVERLAY_KIND_ATTRIBUTION:
            info, image, _, ids, _, maps = self._explain(request, context)
            rendered = [
                pb.RenderedOverlay(
                    class_id=c, label=info.labels[c - 1], png=encode_png(heatmap_overlay(image, m, opacity, colormap))
                )
                for c, m in zip(ids, maps, strict=True)
            ]
        else:
            raise invalid(f"unknown overlay kind {request.kind}")
        return pb.OverlayResponse(
            header=self._header(info, rid), height=image.shape[0], width=image.shape[1], overlays=rendered
        )

    @rpc("ListModels")
    def ListModels(self, request: pb.ListModelsRequest, context, rid: str) -> pb.ListModelsResponse:
        """Every loaded model with its metadata."""
        return pb.ListModelsResponse(
            request_id=rid,
            backend=self.backend.name,
            models=[metadata_message(m, self.methods(m)) for m in self.backend.models()],
        )

    @rpc("GetModelMetadata")
    def GetModelMetadata(self, request: pb.ModelMetadataRequest, context, rid: str) -> pb.ModelMetadataResponse:
        """One model's metadata."""
        if not request.model:
            raise invalid("model is empty")
        info = self.backend.model(request.model, request.model_version)
        return pb.ModelMetadataResponse(
            header=self._header(info, rid), metadata=metadata_message(info, self.methods(info))
        )
