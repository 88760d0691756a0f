"""The weakseg.v1 SegmentationService: Segment, Explain, Overlay, ListModels, GetModelMetadata, Detect over a
Backend."""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc
import matplotlib
import numpy as np

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.backends.base import (
    CLASSIFIER,
    DETECTOR,
    INSTANCE,
    SEGMENTER,
    Backend,
    ModelInfo,
    ServingError,
    TensorMeta,
    invalid,
)
from serving.explain import BOX_METHODS, GRADIENT_METHODS, GradientExplainer
from serving.images import ImageLimits, decode_encoded, decode_raw
from serving.metrics import ServingMetrics
from serving.rpc import rpc, time_left
from weakseg.data.classes import voc_palette
from weakseg.io import encode_png
from weakseg.report.overlay import heatmap_overlay, mask_overlay

METHODS = ("cam", *GRADIENT_METHODS)
DETECTION_KINDS = (DETECTOR, INSTANCE)


def decode_image(image: pb.Image, limits: ImageLimits) -> np.ndarray:
    """The request image as uint8 HxWx3 RGB, or INVALID_ARGUMENT naming the problem."""
    which = image.WhichOneof("source")
    if which == "encoded":
        return decode_encoded(image.encoded, limits)
    if which == "raw":
        r = image.raw
        return decode_raw(r.data, r.height, r.width, r.channels, limits)
    raise invalid("image is missing: set image.encoded (PNG/JPEG bytes) or image.raw")


def unit_interval(value: float, name: str) -> float:
    """value if it is a number in [0, 1], else INVALID_ARGUMENT naming the field."""
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise invalid(f"{name} must be a number in [0, 1], got {value}")
    return value


def label_of(info: ModelInfo, class_id: int) -> str:
    """The label of a 1-based class id of a classifier or detector ('' outside 1..C)."""
    return info.labels[class_id - 1] if 1 <= class_id <= len(info.labels) else ""


def box_message(box: np.ndarray) -> pb.Box:
    """A Box message of x1, y1, x2, y2."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return pb.Box(x1=x1, y1=y1, x2=x2, y2=y2)


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

    def _lookup(self, name: str, version: str) -> ModelInfo:
        if not name:
            raise invalid("model is empty: name a model (ListModels lists them)")
        return self.backend.model(name, version)

    def _header(self, info: ModelInfo, rid: str) -> pb.ResponseHeader:
        return pb.ResponseHeader(model=info.name, model_version=info.version, request_id=rid, backend=self.backend.name)

    def methods(self, info: ModelInfo) -> list[str]:
        """Explain methods a model supports on this backend."""
        gradients = self.backend.supports_gradients and info.checkpoint is not None
        if info.kind in DETECTION_KINDS:
            return list(BOX_METHODS) if gradients else []
        if info.kind != CLASSIFIER:
            return []
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
        if len(getattr(request, "boxes", ())):
            raise invalid(f"boxes are for method 'bbam' of detectors; model {info.name!r} is a classifier")
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

    def _explain_boxes(self, info: ModelInfo, request: pb.ExplainRequest, context, rid: str) -> pb.ExplainResponse:
        """Explain for a detector or instance segmenter: one BBAM map per requested box."""
        method = request.method or BOX_METHODS[0]
        if method not in BOX_METHODS:
            raise invalid(
                f"unknown method {method!r} for {info.kind} {info.name!r}; choose from {', '.join(BOX_METHODS)}"
            )
        if request.target_classes:
            raise invalid("target_classes are for classifiers; bbam explains the boxes in `boxes`")
        if not self.backend.supports_gradients:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {method!r} needs gradients, which the {self.backend.name} backend cannot compute "
                "(Triton runs forward passes only); use the embedded backend",
            )
        self.explainer.bbam_settings(request.bbam_iterations, request.bbam_proposals, len(request.boxes))
        image = decode_image(request.image, self.limits)
        boxes = np.array([[t.box.x1, t.box.y1, t.box.x2, t.box.y2] for t in request.boxes], dtype=np.float64)
        labels = [int(t.class_id) for t in request.boxes]
        found = self.explainer.bbam(
            info,
            image,
            boxes,
            labels,
            request.bbam_iterations,
            request.bbam_proposals,
            request.bbam_seed,
            time_left(context),
        )
        response = pb.ExplainResponse(
            header=self._header(info, rid),
            method=method,
            height=image.shape[0],
            width=image.shape[1],
            map_format=request.map_format,
        )
        maps = np.clip(np.nan_to_num(found.maps), 0.0, 1.0)
        for target, m, positives, threshold in zip(
            request.boxes, maps, found.positives, found.iou_thresholds, strict=True
        ):
            response.maps.add(
                class_id=target.class_id,
                label=label_of(info, target.class_id),
                data=self._map_bytes(m, request.map_format),
                box=target,
                positives=positives,
                iou_threshold=threshold or 0.0,
            )
        return response

    @staticmethod
    def _map_bytes(m: np.ndarray, map_format: int) -> bytes:
        """A [0, 1] map as uint8 (round(255 m)) or little-endian float16 bytes."""
        return (np.rint(m * 255).astype(np.uint8) if map_format == pb.MAP_FORMAT_UINT8 else m.astype("<f2")).tobytes()

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
        target = self._lookup(request.model, request.model_version)
        if target.kind in DETECTION_KINDS:
            return self._explain_boxes(target, request, context, rid)
        info, image, method, ids, scores, maps = self._explain(request, context)
        response = pb.ExplainResponse(
            header=self._header(info, rid),
            method=method,
            height=image.shape[0],
            width=image.shape[1],
            map_format=request.map_format,
        )
        for c, m in zip(ids, maps, strict=True):
            data = self._map_bytes(m, request.map_format)
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

    @rpc("Detect")
    def Detect(self, request: pb.DetectRequest, context, rid: str) -> pb.DetectResponse:
        """Boxes, classes and scores of a detector, plus binary masks of an instance segmenter, best first."""
        info = self._lookup(request.model, request.model_version)
        if info.kind not in DETECTION_KINDS:
            raise invalid(f"model {info.name!r} is a {info.kind}; Detect needs a detector or instance model")
        min_score = unit_interval(request.min_score, "min_score")
        threshold = unit_interval(
            request.mask_threshold if request.HasField("mask_threshold") else 0.5, "mask_threshold"
        )
        if request.mask_format not in (pb.MASK_FORMAT_PNG, pb.MASK_FORMAT_RAW, pb.MASK_FORMAT_PNG_AND_RAW):
            raise invalid(f"unknown mask_format {request.mask_format}")
        image = decode_image(request.image, self.limits)
        with_masks = info.kind == INSTANCE and not request.boxes_only
        outputs = ["boxes", "scores", "labels", *(["masks"] if with_masks else [])]
        out = self.backend.infer(
            info.name, {"pixels": image}, outputs, version=info.version, timeout=time_left(context)
        )
        scores = np.asarray(out["scores"], dtype=np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        keep = order[scores[order] >= min_score]
        if request.max_detections:
            keep = keep[: request.max_detections]
        h, w = image.shape[:2]
        response = pb.DetectResponse(header=self._header(info, rid), height=h, width=w, has_masks=with_masks)
        boxes, labels = np.asarray(out["boxes"]).reshape(-1, 4), np.asarray(out["labels"]).reshape(-1)
        for k in keep:
            c = int(labels[k])
            detection = response.detections.add(
                class_id=c, label=label_of(info, c), score=float(scores[k]), box=box_message(boxes[k])
            )
            if not with_masks:
                continue
            mask = (out["masks"][k] > threshold).astype(np.uint8)
            detection.mask_pixels = int(mask.sum())
            if request.mask_format in (pb.MASK_FORMAT_PNG, pb.MASK_FORMAT_PNG_AND_RAW):
                detection.mask_png = encode_png(mask, self._palette, compress_level=1)
            if request.mask_format in (pb.MASK_FORMAT_RAW, pb.MASK_FORMAT_PNG_AND_RAW):
                detection.mask_raw = mask.tobytes()
        return response
