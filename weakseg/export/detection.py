"""Export of torchvision Faster R-CNN detectors and Mask R-CNN instance segmenters to ONNX, with the parity check
of onnxruntime against PyTorch matched detection by detection.

Graph. Input `pixels`: uint8 RGB, HWC [height, width, 3] (one image: torchvision's detection graphs take one
image per run, so the Triton entry has max_batch_size 0), any height and width >= MIN_SIDE; scaling to [0, 1]
happens inside, the model's GeneralizedRCNNTransform resizes and normalises as in PyTorch. Outputs, highest score
first: `boxes` float32 [N, 4] (x1, y1, x2, y2 in pixel-edge coordinates of the input), `scores` float32 [N],
`labels` int64 [N] (1..C, class id i is classes[i - 1]); instance segmenters add `masks` float32 [N, height,
width], each detection's mask probability pasted into the image (torchvision's paste_masks_in_image). The
model's score threshold, NMS threshold and detection limit are baked into the graph (config.pbtxt parameters
name them).

Exporter. The TorchScript-based exporter (`torch.onnx.export(dynamo=False)`, opset 17): torchvision's detection
models keep ONNX-specific code paths for tracing (the resize with traced scale factors, the looped mask paste),
which torch.export does not take (data-dependent detection counts). A trace records the path one input takes, and
an input without detections traces a graph that fails on inputs with detections, so the trace input must give at
least one detection: `trace_image` if given, else the first of a few synthetic images that does (ExportError if
none: pass an image the detector finds something in).

One change to the traced model: torchvision's traced resize hands ONNX Resize the scale factor s, and Resize
samples at 1/s, while PyTorch (recompute_scale_factor) samples at input / output size with output = floor(input *
s); where input * s is not an integer the two grids drift apart by up to a pixel across the image, which moves
boxes by tenths of a pixel and scores by 1e-2 on high-frequency images. During the trace the resize is replaced
(`exact_resize`) by one that computes floor(input * s) in double precision, as PyTorch does in Python, and resizes
to that size, so both sample at input / output. The parity check runs the unchanged PyTorch model.

Parity. PyTorch and onnxruntime run the same uint8 images at the export size and at a second, non-square size.
Their detections are matched one to one, not by position: NMS and the top-k can order near-equal scores
differently in onnxruntime. In PyTorch's score order, each detection takes the unmatched onnxruntime detection
of the same label with the highest IoU, if that IoU is at least MATCH_IOU (per-class NMS keeps same-class boxes
below IoU 0.5 of one another, so the partner is unambiguous). Over the pairs: max |box difference| (pixels),
max |score difference| and, for masks, the share of pixels whose probability differs by more than the mask
tolerance (torchvision pastes a mask at integer box corners, so a box a hair's breadth from an integer can move
one mask row or column). A detection without a partner fails parity unless its score lies within the score
tolerance of the score threshold or, when the detection limit is reached, of the lowest kept score (a near-tie
at the cut-off). Limits: boxes BOX_TOLERANCE (0.1 px), scores SCORE_TOLERANCE (1e-3), masks at most
MASK_SHARE_LIMIT (0.1 %) of matched pixels off by more than MASK_TOLERANCE (1e-3). The check runs on the trace
image and on its resize to the second size. What it does not cover: on images where many RPN proposals have
near-equal objectness (a random-weight detector on uniform noise), NMS keeps different proposals in the two
runtimes, and their detections then differ beyond these limits.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from weakseg.export.graphs import INPUT_NAME, pixels_to_float
from weakseg.export.runtime import MIN_SIDE, ort_session
from weakseg.export.triton_config import TensorSpec, render_config

OPSET = 17
DETECTOR_OUTPUTS = ("boxes", "scores", "labels")
INSTANCE_OUTPUTS = (*DETECTOR_OUTPUTS, "masks")
MATCH_IOU = 0.5
BOX_TOLERANCE = 0.1  # pixels (ExportOptions.box_tolerance)
SCORE_TOLERANCE = 1e-3  # probability (ExportOptions.score_tolerance)
MASK_TOLERANCE = 1e-3  # mask probability
MASK_SHARE_LIMIT = 1e-3  # share of matched mask pixels allowed beyond MASK_TOLERANCE
INPUT_CONTRACT = (
    "input 'pixels': uint8 RGB, HWC [height, width, 3] (one image per request), values 0..255, any height and "
    f"width >= {MIN_SIDE}; scaling happens inside the graph and the detector resizes and normalises, so send "
    "decoded pixels as is"
)


class DetectionGraph(nn.Module):
    """pixels [H, W, 3] uint8 -> (boxes, scores, labels[, masks [N, H, W]]) of a torchvision R-CNN in eval mode."""

    def __init__(self, model: nn.Module, masks: bool) -> None:
        super().__init__()
        self.model, self.masks = model, masks

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = pixels_to_float(pixels[None])[0]
        out = self.model([x])[0]
        result = (out["boxes"], out["scores"], out["labels"])
        return (*result, out["masks"][:, 0]) if self.masks else result


def _resize_to_computed_size(
    image: torch.Tensor,
    self_min_size: float,
    self_max_size: float,
    target: dict[str, torch.Tensor] | None = None,
    fixed_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """torchvision's _resize_image_and_masks while tracing at inference, with the output size computed explicitly
    (module docstring); anything else (no trace, a fixed size, training targets) goes to torchvision's own."""
    if fixed_size is not None or target is not None or not torch._C._get_tracing_state():
        return _TORCHVISION_RESIZE[0](image, self_min_size, self_max_size, target, fixed_size)
    # 1-d tensors throughout: the TorchScript exporter computes 0-d tensors (scalars) in float32
    shape = torch._shape_as_tensor(image)[-2:].to(torch.float64)
    limits = torch.tensor([float(self_min_size), float(self_max_size)], dtype=torch.float64)
    scale = torch.amin(limits / torch.sort(shape).values, dim=0, keepdim=True)
    size = torch.floor(shape * scale).float()  # whole numbers, exact in float32; traced, not baked in
    # the op interpolate(recompute_scale_factor=True) calls while tracing, with its output size in double precision
    out = torch._C._nn.upsample_bilinear2d(image[None], [size[0], size[1]], False, None)  # type: ignore[list-item]
    return out[0], target


_TORCHVISION_RESIZE: list[Any] = []  # torchvision's own function, kept while it is replaced
_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def exact_resize() -> Iterator[None]:
    """torchvision's detection resize replaced by _resize_to_computed_size for the block (the ONNX trace); one block
    at a time. Outside a trace the replacement calls torchvision's own, so other threads' detections do not change
    meanwhile."""
    from torchvision.models.detection import transform

    with _PATCH_LOCK:
        _TORCHVISION_RESIZE[:] = [transform._resize_image_and_masks]
        transform._resize_image_and_masks = _resize_to_computed_size
        try:
            yield
        finally:
            transform._resize_image_and_masks = _TORCHVISION_RESIZE[0]


def output_names(kind: str) -> tuple[str, ...]:
    """The graph's outputs for a detector or an instance segmenter."""
    return INSTANCE_OUTPUTS if kind == "instance" else DETECTOR_OUTPUTS


def tensor_specs(kind: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Triton input and output specs (whole shapes: max_batch_size 0)."""
    inputs = [TensorSpec(INPUT_NAME, "TYPE_UINT8", (-1, -1, 3), format="FORMAT_NHWC")]
    outputs = [
        TensorSpec("boxes", "TYPE_FP32", (-1, 4)),
        TensorSpec("scores", "TYPE_FP32", (-1,)),
        TensorSpec("labels", "TYPE_INT64", (-1,)),
    ]
    if kind == "instance":
        outputs.append(TensorSpec("masks", "TYPE_FP32", (-1, -1, -1)))
    return inputs, outputs


def export_detection_onnx(
    graph: DetectionGraph, example: torch.Tensor, metadata: dict[str, str] | None = None
) -> bytes:
    """Serialized ONNX model of graph(pixels) traced on example (it must give a detection), dynamic H, W and N."""
    names = output_names("instance" if graph.masks else "detector")
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {0: "height", 1: "width"}}
    axes.update({name: {0: "detections"} for name in names})
    if graph.masks:
        axes["masks"] = {0: "detections", 1: "height", 2: "width"}
    graph.eval()
    with (
        tempfile.TemporaryDirectory() as tmp,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        torch.no_grad(),
        exact_resize(),
    ):
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            graph,
            (example,),
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=list(names),
            dynamic_axes=axes,
        )
        proto = onnx.load(path)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def candidate_images(size: int, seed: int = 0) -> list[np.ndarray]:
    """Synthetic size x size uint8 images tried as trace input: smooth noise, uniform noise, a ramp, mid grey."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, size // 8), max(2, size // 8), 3), dtype=np.uint8)
    smooth = np.asarray(resize(coarse, size, size))
    ramp = np.broadcast_to(np.linspace(0, 255, size, dtype=np.float32)[None, :, None], (size, size, 3))
    return [
        smooth,
        rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8),
        np.ascontiguousarray(ramp).astype(np.uint8),
        np.full((size, size, 3), 128, dtype=np.uint8),
    ]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A uint8 HxWx3 image resized (bilinear) to height x width."""
    from PIL import Image

    return np.array(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def run_graph(graph: DetectionGraph, image: np.ndarray) -> list[np.ndarray]:
    """PyTorch's outputs for one uint8 image."""
    with torch.no_grad():
        return [t.cpu().numpy() for t in graph(torch.from_numpy(np.ascontiguousarray(image)))]


def trace_input(graph: DetectionGraph, size: int, image: np.ndarray | None = None) -> np.ndarray:
    """The first image (`image` resized to size x size, else candidate_images) with at least one detection."""
    from weakseg.export.repository import ExportError

    candidates = [resize(image, size, size)] if image is not None else candidate_images(size)
    for candidate in candidates:
        if len(run_graph(graph, candidate)[0]) > 0:
            return candidate
    what = "the trace image" if image is not None else f"any of {len(candidates)} synthetic {size}x{size} images"
    raise ExportError(
        f"the detector finds nothing in {what}; the ONNX trace needs an input with at least one detection "
        "(pass --trace-image with an image it detects an object in)"
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [len(a), len(b)] of xyxy boxes."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_detections(
    ref: tuple[np.ndarray, np.ndarray, np.ndarray], out: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """(pairs (ref index, out index), unmatched ref, unmatched out) of two (boxes, scores, labels) sets (module
    docstring: in ref's score order, the same-label partner of highest IoU >= MATCH_IOU)."""
    boxes_r, scores_r, labels_r = ref
    boxes_o, _, labels_o = out
    iou = box_iou(boxes_r.astype(np.float64), boxes_o.astype(np.float64))
    free = np.ones(len(boxes_o), dtype=bool)
    pairs, lone = [], []
    for i in np.argsort(-scores_r, kind="stable"):
        allowed = free & (labels_o == labels_r[i])
        if not allowed.any():
            lone.append(int(i))
            continue
        candidates = np.where(allowed, iou[i], -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= MATCH_IOU:
            pairs.append((int(i), j))
            free[j] = False
        else:
            lone.append(int(i))
    return pairs, sorted(lone), [int(j) for j in np.flatnonzero(free)]


@dataclass(frozen=True)
class DetectionParity:
    """onnxruntime vs PyTorch on images at the export size and at a second size, detections matched (module
    docstring)."""

    sizes: tuple[tuple[int, int], ...]
    detections: tuple[tuple[int, int], ...]  # per size: (PyTorch, onnxruntime) detection counts
    matched: int
    unmatched: int  # detections without a partner that fail parity
    cutoff_unmatched: int  # detections without a partner at a near-tie of the score threshold or detection limit
    max_box_diff: float
    box_tolerance: float
    max_score_diff: float
    score_tolerance: float
    mask_share: float  # share of matched mask pixels differing by more than mask_tolerance (0 without masks)
    mask_tolerance: float
    mask_share_limit: float
    max_mask_diff: float
    output_names: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Every detection matched (or a cut-off near-tie) and every difference within its limit."""
        return (
            self.unmatched == 0
            and self.max_box_diff <= self.box_tolerance
            and self.max_score_diff <= self.score_tolerance
            and self.mask_share <= self.mask_share_limit
        )

    def describe(self) -> str:
        """One line for errors and logs."""
        sizes = ", ".join(
            f"{h}x{w} ({r} vs {o} detections)" for (h, w), (r, o) in zip(self.sizes, self.detections, strict=True)
        )
        text = (
            f"at {sizes}: {self.matched} matched, {self.unmatched} unmatched "
            f"(+{self.cutoff_unmatched} at the cut-off), max |box diff| {self.max_box_diff:.3g} px "
            f"(limit {self.box_tolerance:g}), max |score diff| {self.max_score_diff:.3g} (limit {self.score_tolerance:g})"
        )
        if "masks" in self.output_names:
            text += (
                f", mask pixels off by > {self.mask_tolerance:g}: {self.mask_share:.3g} "
                f"(limit {self.mask_share_limit:g}; max {self.max_mask_diff:.3g})"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        """Plain dict with the verdict."""
        d = asdict(self)
        d["sizes"] = [list(s) for s in self.sizes]
        d["detections"] = [list(n) for n in self.detections]
        return {**d, "matching": f"same label, IoU >= {MATCH_IOU}, in PyTorch's score order", "ok": self.ok}


def _at_cutoff(score: float, scores: np.ndarray, threshold: float, limit: int, tolerance: float) -> bool:
    """A score within tolerance of the score threshold or, when `limit` detections were kept, of the lowest."""
    if abs(score - threshold) <= tolerance:
        return True
    return len(scores) >= limit and abs(score - float(scores.min())) <= tolerance


def check_detection_parity(
    onnx_bytes: bytes,
    graph: DetectionGraph,
    images: list[np.ndarray],
    score_threshold: float,
    detection_limit: int,
    score_tolerance: float = SCORE_TOLERANCE,
    box_tolerance: float = BOX_TOLERANCE,
    mask_tolerance: float = MASK_TOLERANCE,
    mask_share_limit: float = MASK_SHARE_LIMIT,
) -> DetectionParity:
    """Run the ONNX model (CPU provider) and graph on each uint8 image and compare matched detections."""
    session = ort_session(onnx_bytes)
    names = tuple(o.name for o in session.get_outputs())
    matched = unmatched = cutoff = 0
    box_diff = score_diff = mask_diff = 0.0
    off = total = 0
    counts = []
    graph.eval()
    for image in images:
        ref = run_graph(graph, image)
        out = session.run(list(names), {INPUT_NAME: np.ascontiguousarray(image)})
        counts.append((len(ref[0]), len(out[0])))
        pairs, lone_ref, lone_out = match_detections((ref[0], ref[1], ref[2]), (out[0], out[1], out[2]))
        matched += len(pairs)
        for scores, lone in ((ref[1], lone_ref), (out[1], lone_out)):
            for k in lone:
                if _at_cutoff(float(scores[k]), scores, score_threshold, detection_limit, score_tolerance):
                    cutoff += 1
                else:
                    unmatched += 1
        if not pairs:
            continue
        i, j = (np.asarray(v) for v in zip(*pairs, strict=True))
        box_diff = max(box_diff, float(np.abs(ref[0][i] - out[0][j]).max()))
        score_diff = max(score_diff, float(np.abs(ref[1][i] - out[1][j]).max()))
        if len(names) > 3:
            if ref[3].shape[1:] != out[3].shape[1:]:
                off, total = 1, 1
                continue
            delta = np.abs(ref[3][i] - out[3][j])
            mask_diff = max(mask_diff, float(delta.max()))
            off += int((delta > mask_tolerance).sum())
            total += delta.size
    return DetectionParity(
        sizes=tuple((int(im.shape[0]), int(im.shape[1])) for im in images),
        detections=tuple(counts),
        matched=matched,
        unmatched=unmatched,
        cutoff_unmatched=cutoff,
        max_box_diff=box_diff,
        box_tolerance=box_tolerance,
        max_score_diff=score_diff,
        score_tolerance=score_tolerance,
        mask_share=off / total if total else 0.0,
        mask_tolerance=mask_tolerance,
        mask_share_limit=mask_share_limit,
        max_mask_diff=mask_diff,
        output_names=names,
    )


def load_detection_model(model_path: str | os.PathLike, kind: str) -> tuple[nn.Module, Any]:
    """(model in eval mode, its DetectorConfig / InstanceConfig) of a detector or instance checkpoint."""
    if kind == "instance":
        from weakseg.models.instance import load_instance_model

        return load_instance_model(model_path)
    from weakseg.models.detector import load_detector

    return load_detector(model_path)


def export_detection(
    model_path: str | os.PathLike,
    model_dir: Path,
    kind: str,
    options: Any,
    trace_image: np.ndarray | None = None,
) -> Any:
    """Write <model_dir> for a detector or instance checkpoint (ONNX, config.pbtxt with max_batch_size 0,
    labels.txt, export.json, the checkpoint beside it) after passing parity; an ExportResult (weakseg.export)."""
    from weakseg.export.repository import (
        ExportError,
        ExportResult,
        config_header,
        parity_size,
        run_exporter,
        version_record,
        write_model_files,
    )
    from weakseg.io import atomic_write_text
    from weakseg.models.checkpoint import file_sha256

    name = model_dir.name
    onnx_path = model_dir / str(options.version) / "model.onnx"
    model, config = load_detection_model(model_path, kind)
    labels = list(config.classes)
    size = options.input_size or int(config.min_size)
    if size < MIN_SIDE:
        raise ExportError(f"input size must be >= {MIN_SIDE}, got {size}")
    graph = DetectionGraph(model, masks=kind == "instance").eval()
    example = trace_input(graph, size, trace_image)
    heads: Any = model.roi_heads
    score_threshold, limit = float(heads.score_thresh), int(heads.detections_per_img)
    metadata = {
        "weakseg_kind": kind,
        "classes": json.dumps(labels),
        "input": INPUT_CONTRACT,
        "box_score_thresh": str(score_threshold),
        "detections_per_img": str(limit),
    }
    onnx_bytes = run_exporter(model_path, lambda: export_detection_onnx(graph, torch.from_numpy(example), metadata))
    height, width = parity_size(size)
    parity = check_detection_parity(
        onnx_bytes,
        graph,
        [example, resize(example, height, width)],
        score_threshold,
        limit,
        score_tolerance=options.score_tolerance,
        box_tolerance=options.box_tolerance,
    )
    if not parity.ok:
        raise ExportError(f"{model_path}: onnxruntime disagrees with PyTorch {parity.describe()}; nothing written")

    sha = file_sha256(model_path)
    inputs, outputs = tensor_specs(kind)
    header = config_header(
        kind,
        model_path,
        sha,
        outputs,
        "(N = detections, highest score first)\nmax_batch_size 0: torchvision's detection graphs take one image per run",
    )
    record = version_record(kind, model_path, sha, options.version, size, parity, opset=OPSET)
    write_model_files(
        model_dir, onnx_path, onnx_bytes, labels, record, model_path if options.include_checkpoint else None
    )
    config_path = model_dir / "config.pbtxt"
    serving = replace(options.serving, warmup_size=options.serving.warmup_size or size)
    parameters = {
        "box_score_thresh": str(score_threshold),
        "detections_per_img": str(limit),
        "min_size": str(config.min_size),
        "max_size": str(config.max_size),
    }
    text = render_config(name, kind, inputs, outputs, labels, serving, header, batched=False, parameters=parameters)
    atomic_write_text(config_path, text)
    return ExportResult(kind, name, model_dir, onnx_path, config_path, labels, parity, sha)
