from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MaskFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASK_FORMAT_PNG: _ClassVar[MaskFormat]
    MASK_FORMAT_RAW: _ClassVar[MaskFormat]
    MASK_FORMAT_PNG_AND_RAW: _ClassVar[MaskFormat]

class MapFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAP_FORMAT_UINT8: _ClassVar[MapFormat]
    MAP_FORMAT_FLOAT16: _ClassVar[MapFormat]

class OverlayKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERLAY_KIND_ATTRIBUTION: _ClassVar[OverlayKind]
    OVERLAY_KIND_MASK: _ClassVar[OverlayKind]
MASK_FORMAT_PNG: MaskFormat
MASK_FORMAT_RAW: MaskFormat
MASK_FORMAT_PNG_AND_RAW: MaskFormat
MAP_FORMAT_UINT8: MapFormat
MAP_FORMAT_FLOAT16: MapFormat
OVERLAY_KIND_ATTRIBUTION: OverlayKind
OVERLAY_KIND_MASK: OverlayKind

class RawImage(_message.Message):
    __slots__ = ("data", "height", "width", "channels")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    height: int
    width: int
    channels: int
    def __init__(self, data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class ResponseHeader(_message.Message):
    __slots__ = ("model", "model_version", "request_id", "backend")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    request_id: str
    backend: str
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("request_id", "model", "model_version", "image", "mask_format")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_FORMAT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    model_version: str
    image: Image
    mask_format: MaskFormat
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., mask_format: _Optional[_Union[MaskFormat, str]] = ...) -> None: ...

class ClassStat(_message.Message):
    __slots__ = ("class_id", "label", "pixel_fraction", "score")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    pixel_fraction: float
    score: float
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., pixel_fraction: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("header", "height", "width", "mask_png", "mask_raw", "present", "scores")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    MASK_RAW_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    height: int
    width: int
    mask_png: bytes
    mask_raw: bytes
    present: _containers.RepeatedCompositeFieldContainer[ClassStat]
    scores: _containers.RepeatedCompositeFieldContainer[ClassStat]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., mask_png: _Optional[bytes] = ..., mask_raw: _Optional[bytes] = ..., present: _Optional[_Iterable[_Union[ClassStat, _Mapping]]] = ..., scores: _Optional[_Iterable[_Union[ClassStat, _Mapping]]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class BoxTarget(_message.Message):
    __slots__ = ("box", "class_id")
    BOX_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    box: Box
    class_id: int
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., class_id: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("request_id", "model", "model_version", "image", "method", "target_classes", "top_k", "map_format", "advcam_steps", "boxes", "bbam_iterations", "bbam_proposals", "bbam_seed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASSES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAP_FORMAT_FIELD_NUMBER: _ClassVar[int]
    ADVCAM_STEPS_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    BBAM_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    BBAM_PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    BBAM_SEED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    model_version: str
    image: Image
    method: str
    target_classes: _containers.RepeatedScalarFieldContainer[int]
    top_k: int
    map_format: MapFormat
    advcam_steps: int
    boxes: _containers.RepeatedCompositeFieldContainer[BoxTarget]
    bbam_iterations: int
    bbam_proposals: int
    bbam_seed: int
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., method: _Optional[str] = ..., target_classes: _Optional[_Iterable[int]] = ..., top_k: _Optional[int] = ..., map_format: _Optional[_Union[MapFormat, str]] = ..., advcam_steps: _Optional[int] = ..., boxes: _Optional[_Iterable[_Union[BoxTarget, _Mapping]]] = ..., bbam_iterations: _Optional[int] = ..., bbam_proposals: _Optional[int] = ..., bbam_seed: _Optional[int] = ...) -> None: ...

class AttributionMap(_message.Message):
    __slots__ = ("class_id", "label", "score", "data", "box", "positives", "iou_threshold")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    data: bytes
    box: BoxTarget
    positives: int
    iou_threshold: float
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., data: _Optional[bytes] = ..., box: _Optional[_Union[BoxTarget, _Mapping]] = ..., positives: _Optional[int] = ..., iou_threshold: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("header", "method", "height", "width", "map_format", "maps")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAP_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    method: str
    height: int
    width: int
    map_format: MapFormat
    maps: _containers.RepeatedCompositeFieldContainer[AttributionMap]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., method: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., map_format: _Optional[_Union[MapFormat, str]] = ..., maps: _Optional[_Iterable[_Union[AttributionMap, _Mapping]]] = ...) -> None: ...

class OverlayRequest(_message.Message):
    __slots__ = ("request_id", "model", "model_version", "image", "kind", "method", "target_classes", "top_k", "colormap", "opacity", "advcam_steps")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASSES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    COLORMAP_FIELD_NUMBER: _ClassVar[int]
    OPACITY_FIELD_NUMBER: _ClassVar[int]
    ADVCAM_STEPS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    model_version: str
    image: Image
    kind: OverlayKind
    method: str
    target_classes: _containers.RepeatedScalarFieldContainer[int]
    top_k: int
    colormap: str
    opacity: float
    advcam_steps: int
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., kind: _Optional[_Union[OverlayKind, str]] = ..., method: _Optional[str] = ..., target_classes: _Optional[_Iterable[int]] = ..., top_k: _Optional[int] = ..., colormap: _Optional[str] = ..., opacity: _Optional[float] = ..., advcam_steps: _Optional[int] = ...) -> None: ...

class RenderedOverlay(_message.Message):
    __slots__ = ("class_id", "label", "png")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    png: bytes
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., png: _Optional[bytes] = ...) -> None: ...

class OverlayResponse(_message.Message):
    __slots__ = ("header", "height", "width", "overlays")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    OVERLAYS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    height: int
    width: int
    overlays: _containers.RepeatedCompositeFieldContainer[RenderedOverlay]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., overlays: _Optional[_Iterable[_Union[RenderedOverlay, _Mapping]]] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("name", "version", "kind", "labels", "inputs", "outputs", "max_batch_size", "platform", "methods")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    kind: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    max_batch_size: int
    platform: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., max_batch_size: _Optional[int] = ..., platform: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("request_id", "backend", "models")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    backend: str
    models: _containers.RepeatedCompositeFieldContainer[ModelMetadata]
    def __init__(self, request_id: _Optional[str] = ..., backend: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelMetadata, _Mapping]]] = ...) -> None: ...

class ModelMetadataRequest(_message.Message):
    __slots__ = ("request_id", "model", "model_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    model_version: str
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ModelMetadataResponse(_message.Message):
    __slots__ = ("header", "metadata")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    metadata: ModelMetadata
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., metadata: _Optional[_Union[ModelMetadata, _Mapping]] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("request_id", "model", "model_version", "image", "min_score", "max_detections", "mask_format", "mask_threshold", "boxes_only")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    MASK_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MASK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BOXES_ONLY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    model_version: str
    image: Image
    min_score: float
    max_detections: int
    mask_format: MaskFormat
    mask_threshold: float
    boxes_only: bool
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., min_score: _Optional[float] = ..., max_detections: _Optional[int] = ..., mask_format: _Optional[_Union[MaskFormat, str]] = ..., mask_threshold: _Optional[float] = ..., boxes_only: _Optional[bool] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("class_id", "label", "score", "box", "mask_png", "mask_raw", "mask_pixels")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    MASK_RAW_FIELD_NUMBER: _ClassVar[int]
    MASK_PIXELS_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    box: Box
    mask_png: bytes
    mask_raw: bytes
    mask_pixels: int
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., mask_png: _Optional[bytes] = ..., mask_raw: _Optional[bytes] = ..., mask_pixels: _Optional[int] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("header", "height", "width", "detections", "has_masks")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    HAS_MASKS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    height: int
    width: int
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    has_masks: bool
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., has_masks: _Optional[bool] = ...) -> None: ...
