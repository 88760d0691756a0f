"""ONNX export with dynamic batch, height and width (torch.export-based exporter), and the parity check
of onnxruntime against PyTorch on an input size the graph was not traced with."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import torch
from torch import nn

from weakseg.export.graphs import INPUT_NAME
from weakseg.export.runtime import MIN_SIDE, ort_session

MAX_SIDE = 8192
MAX_BATCH = 1024


def export_onnx(
    graph: nn.Module, example: torch.Tensor, output_names: tuple[str, ...], metadata: dict[str, str] | None = None
) -> bytes:
    """Serialized ONNX model of graph(pixels) with symbolic batch, height and width; metadata goes into metadata_props."""
    dims = {
        0: torch.export.Dim("batch", min=1, max=MAX_BATCH),
        1: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
        2: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE),
    }
    graph.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_shapes={"pixels": dims},
            optimize=True,
            verbose=False,
        )
    if program is None:  # only the legacy (dynamo=False) exporter returns nothing
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


@dataclass(frozen=True)
class ParityReport:
    """onnxruntime vs PyTorch on inputs of a size the graph was not traced with."""

    height: int
    width: int
    batches: tuple[int, ...]
    max_abs_diff: float  # on logits
    tolerance: float
    second_output: str
    second_diff: float  # cams: max abs diff; mask: pixels that differ at a non-tie (top-2 margin > 2*tolerance)
    second_limit: float
    output_names: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Both outputs within their limits."""
        return self.max_abs_diff < self.tolerance and self.second_diff <= self.second_limit

    def describe(self) -> str:
        """One line for errors and logs."""
        return (
            f"at {self.height}x{self.width}, batches {list(self.batches)}: max |logits diff| = {self.max_abs_diff:.3g} "
            f"(limit {self.tolerance:g}), {self.second_output} = {self.second_diff:.3g} (limit {self.second_limit:g})"
        )

    def to_json(self) -> dict:
        """Plain dict with the verdict."""
        return {**asdict(self), "ok": self.ok}


def check_parity(
    onnx_bytes: bytes,
    graph: nn.Module,
    height: int,
    width: int,
    batches: tuple[int, ...] = (1, 3),
    tolerance: float = 1e-4,
    cam_tolerance: float = 1e-3,
    seed: int = 0,
) -> ParityReport:
    """Run the ONNX model (CPU provider) and graph on the same random uint8 pixels for each batch size and compare.

    The second output is `mask` (count of pixels whose argmax differs where PyTorch's top-2 logit margin
    exceeds 2*tolerance: a real disagreement, not a near-tie; limit 0) or `cams` (max abs diff, limit cam_tolerance).
    """
    session = ort_session(onnx_bytes)
    names = tuple(o.name for o in session.get_outputs())
    second = names[1]
    rng = np.random.default_rng(seed)
    worst, second_worst = 0.0, 0.0
    graph.eval()
    for b in batches:
        pixels = rng.integers(0, 256, size=(b, height, width, 3), dtype=np.uint8)
        with torch.no_grad():
            ref = [t.cpu().numpy() for t in graph(torch.from_numpy(pixels))]
        out = session.run(list(names), {INPUT_NAME: pixels})
        if out[0].shape != ref[0].shape or out[1].shape != ref[1].shape:
            return ParityReport(
                height, width, tuple(batches), float("inf"), tolerance, second, float("inf"), 0.0, names
            )
        worst = max(worst, float(np.abs(out[0] - ref[0]).max()))
        if second == "mask":
            top2 = np.sort(ref[0], axis=1)[:, -2:]
            clear = (top2[:, 1] - top2[:, 0]) > 2 * tolerance
            second_worst = max(second_worst, float(((out[1] != ref[1]) & clear).sum()))
        else:
            second_worst = max(second_worst, float(np.abs(out[1] - ref[1]).max()))
    limit = 0.0 if second == "mask" else cam_tolerance
    return ParityReport(height, width, tuple(batches), worst, tolerance, second, second_worst, limit, names)
