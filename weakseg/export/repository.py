"""`weakseg export`: a checkpoint (segmenter, CAM classifier, detector or instance segmenter) -> one Triton
model-repository entry (detectors and instance segmenters: weakseg.export.detection).

    <repo>/<name>/config.pbtxt      platform onnxruntime_onnx, dynamic batching, bounded queue, warm-up, model_kind
    <repo>/<name>/labels.txt        one class name per line, in output-channel order
    <repo>/<name>/export.json       provenance: checkpoint checksum, parity report, input contract
    <repo>/<name>/<version>/model.onnx
    <repo>/<name>/checkpoint.safetensors   classifiers, detectors, instance segmenters: the PyTorch weights, for
                                            gradient methods (Grad-CAM, AdvCAM, BBAM) served by weakseg's
                                            embedded backend (Triton ignores the file)

Nothing is written unless onnxruntime matches PyTorch on an input size the graph was not traced with.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from weakseg.errors import CheckpointError, WeaksegError
from weakseg.export.graphs import CLASSIFIER_OUTPUTS, INPUT_NAME, SEGMENTER_OUTPUTS, ClassifierGraph, SegmenterGraph
from weakseg.export.onnx_export import MIN_SIDE, ParityReport, check_parity, export_onnx
from weakseg.export.triton_config import (
    CHECKPOINT_FILE,
    DETECTION_KINDS,
    LABELS_FILE,
    ServingOptions,
    TensorSpec,
    render_config,
)
from weakseg.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from weakseg.models.checkpoint import file_sha256, read_metadata, resolve_weights

if TYPE_CHECKING:
    from weakseg.export.detection import DetectionParity

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
INPUT_CONTRACT = (
    "input 'pixels': uint8 RGB, NHWC [batch, height, width, 3], values 0..255, any height and width "
    f">= {MIN_SIDE}; scaling and ImageNet normalisation happen inside the graph, so send decoded pixels as is"
)


class ExportError(WeaksegError):
    """An export that cannot be written (failed parity, existing version, bad name)."""


@dataclass
class ExportOptions:
    """What `weakseg export` does besides the model itself."""

    version: int = 1
    input_size: int | None = None  # trace and warm-up size (default: the segmenter's training crop, else 128)
    serving: ServingOptions = field(default_factory=ServingOptions)
    tolerance: float = 1e-4  # max abs logits difference onnxruntime vs PyTorch
    force: bool = False  # overwrite an existing version
    include_checkpoint: bool = True  # classifiers, detectors: copy the safetensors weights beside the ONNX
    trace_image: Path | None = None  # detectors: the trace input (it must give a detection; default: synthetic)
    score_tolerance: float = 1e-3  # detectors: max abs difference of matched scores (probabilities)
    box_tolerance: float = 0.1  # detectors: max abs difference of matched box coordinates (pixels)


@dataclass
class ExportResult:
    """Where the entry went and how parity came out."""

    kind: str
    name: str
    model_dir: Path
    onnx_path: Path
    config_path: Path
    labels: list[str]
    parity: ParityReport | DetectionParity
    checkpoint_sha256: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "kind": self.kind,
            "name": self.name,
            "model_dir": str(self.model_dir),
            "onnx": str(self.onnx_path),
            "config": str(self.config_path),
            "classes": len(self.labels),
            "parity": self.parity.to_json(),
            "checkpoint_sha256": self.checkpoint_sha256,
        }


def _load(model_path: str | os.PathLike) -> tuple[str, torch.nn.Module, list[str], dict[str, Any]]:
    """(kind, export graph, label names in output-channel order, checkpoint metadata) of a checkpoint."""
    meta = read_metadata(model_path)
    if meta["kind"] == "segmenter":
        from weakseg.models.segmenter_io import load_segmenter

        segmenter, classes = load_segmenter(model_path)
        return "segmenter", SegmenterGraph(segmenter), ["background", *classes], meta
    if meta["kind"] == "classifier":
        from weakseg.models.classifier_io import load_classifier

        classifier, classes = load_classifier(model_path)
        return "classifier", ClassifierGraph(classifier), list(classes), meta
    raise CheckpointError(
        f"{model_path}: a {meta['kind']!r} checkpoint cannot be exported "
        "(segmenter, classifier, detector or instance only)"
    )


def tensor_specs(kind: str, n_labels: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Triton input and output specs (without the batch dimension) of an exported graph."""
    inputs = [TensorSpec(INPUT_NAME, "TYPE_UINT8", (-1, -1, 3), format="FORMAT_NHWC")]
    if kind == "segmenter":
        outputs = [
            TensorSpec(SEGMENTER_OUTPUTS[0], "TYPE_FP32", (n_labels, -1, -1), label_file=True),
            TensorSpec(SEGMENTER_OUTPUTS[1], "TYPE_UINT8", (-1, -1)),
        ]
    else:
        outputs = [
            TensorSpec(CLASSIFIER_OUTPUTS[0], "TYPE_FP32", (n_labels,), label_file=True),
            TensorSpec(CLASSIFIER_OUTPUTS[1], "TYPE_FP32", (n_labels, -1, -1), label_file=True),
        ]
    return inputs, outputs


def _trace_image(path: Path | None):
    """The trace image as uint8 HxWx3 RGB, or None; ExportError if it does not decode."""
    if path is None:
        return None
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise ExportError(f"{path}: cannot read the trace image ({e})") from e


def run_exporter(model_path: str | os.PathLike, export: Callable[[], bytes]) -> bytes:
    """The ONNX bytes of `export()`, any exporter failure turned into one ExportError naming the checkpoint."""
    try:
        return export()
    except Exception as e:  # the exporter raises many types; the message says what failed
        raise ExportError(
            f"{model_path}: ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from e


def config_header(kind: str, model_path: str | os.PathLike, sha: str, outputs: list[TensorSpec], note: str) -> str:
    """The comment at the top of config.pbtxt: the checkpoint, the input contract, the outputs and `note`."""
    shapes = ", ".join(f"{o.name} {o.data_type} {list(o.dims)}" for o in outputs)
    return (
        f"weakseg {kind} exported from {Path(model_path).name} (sha256 {sha[:16]}...)\n{INPUT_CONTRACT}\n"
        f"outputs: {shapes} {note}"
    )


def version_record(
    kind: str, model_path: str | os.PathLike, sha: str, version: int, size: int, parity: Any, **extra: Any
) -> dict[str, Any]:
    """export.json of one model version: the checkpoint and its sha256, the trace size, the parity check, torch."""
    return {
        "kind": kind,
        "checkpoint": str(model_path),
        "checkpoint_sha256": sha,
        "version": version,
        "input": INPUT_CONTRACT,
        "trace_size": size,
        **extra,
        "parity": parity.to_json(),
        "torch": torch.__version__,
    }


def write_model_files(
    model_dir: Path,
    onnx_path: Path,
    onnx_bytes: bytes,
    labels: list[str],
    record: dict,
    checkpoint: str | os.PathLike | None,
) -> None:
    """One model version's files, each written atomically: the ONNX graph, labels.txt, export.json (`record`) and,
    when `checkpoint` is given, its weights copied beside the graph (for gradient explanations)."""
    atomic_write_bytes(onnx_path, onnx_bytes)
    atomic_write_text(model_dir / LABELS_FILE, "".join(f"{label}\n" for label in labels))
    atomic_write_json(model_dir / "export.json", record)
    if checkpoint is not None:
        atomic_write_bytes(model_dir / CHECKPOINT_FILE, resolve_weights(checkpoint).read_bytes())


def parity_size(size: int) -> tuple[int, int]:
    """A non-square check size different from the traced size x size (odd sides exercise rounding)."""
    return max(MIN_SIDE + 1, size * 3 // 4 + 3) | 1, (size + 29) | 1


def export_model(
    model_path: str | os.PathLike, repo: str | os.PathLike, name: str, options: ExportOptions | None = None
) -> ExportResult:
    """Export a checkpoint to <repo>/<name>/ (ONNX + config.pbtxt + labels) after a passing parity check."""
    options = options or ExportOptions()
    if not _SAFE_NAME.match(name):
        raise ExportError(f"model name {name!r} must be letters, digits, '_', '.' or '-' (it is a folder name)")
    if options.version < 1:
        raise ExportError(f"--version must be >= 1, got {options.version}")
    try:
        options.serving.validate()
    except ValueError as e:
        raise ExportError(str(e)) from e
    model_dir = Path(repo) / name
    onnx_path = model_dir / str(options.version) / "model.onnx"
    if onnx_path.exists() and not options.force:
        raise ExportError(f"{onnx_path}: version {options.version} already exists (pass --version N or --force)")

    kind = read_metadata(model_path)["kind"]
    if kind in DETECTION_KINDS:
        from weakseg.export.detection import export_detection

        return export_detection(model_path, model_dir, kind, options, _trace_image(options.trace_image))
    kind, graph, labels, meta = _load(model_path)
    size = options.input_size or int(meta["extra"].get("crop") or 128)
    if size < MIN_SIDE:
        raise ExportError(f"input size must be >= {MIN_SIDE}, got {size}")
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    metadata = {"weakseg_kind": kind, "classes": json.dumps(labels), "input": INPUT_CONTRACT}
    names = SEGMENTER_OUTPUTS if kind == "segmenter" else CLASSIFIER_OUTPUTS
    onnx_bytes = run_exporter(model_path, lambda: export_onnx(graph, example, names, metadata))
    height, width = parity_size(size)
    parity = check_parity(onnx_bytes, graph, height, width, tolerance=options.tolerance)
    if not parity.ok:
        raise ExportError(f"{model_path}: onnxruntime disagrees with PyTorch {parity.describe()}; nothing written")

    sha = file_sha256(model_path)
    inputs, outputs = tensor_specs(kind, len(labels))
    header = config_header(
        kind,
        model_path,
        sha,
        outputs,
        "(after the batch dimension)\nthe dynamic batcher joins requests only when their height and width match",
    )
    record = version_record(kind, model_path, sha, options.version, size, parity)
    copy = model_path if kind == "classifier" and options.include_checkpoint else None
    write_model_files(model_dir, onnx_path, onnx_bytes, labels, record, copy)
    config_path = model_dir / "config.pbtxt"
    serving = replace(options.serving, warmup_size=options.serving.warmup_size or size)
    atomic_write_text(config_path, render_config(name, kind, inputs, outputs, labels, serving, header))
    return ExportResult(kind, name, model_dir, onnx_path, config_path, labels, parity, sha)
