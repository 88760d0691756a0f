"""Triton Inference Server `config.pbtxt` for an exported model (text format of inference.ModelConfig).

Rendered by hand so the core library does not depend on the Triton client; tests parse the result into
tritonclient's ModelConfig message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PLATFORM = "onnxruntime_onnx"
LABELS_FILE = "labels.txt"
CHECKPOINT_FILE = "checkpoint.safetensors"  # classifiers, detectors: PyTorch weights beside the ONNX (gradient methods)
DETECTION_KINDS = ("detector", "instance")  # torchvision Faster / Mask R-CNN: one image per request (max_batch_size 0)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, Triton data type and dims without the batch dimension (-1 = variable)."""

    name: str
    data_type: str  # TYPE_UINT8, TYPE_FP32, ...
    dims: tuple[int, ...]
    label_file: bool = False  # attach the labels file (outputs whose dim 0 indexes classes)
    format: str | None = None  # FORMAT_NHWC for the image input


@dataclass(frozen=True)
class ServingOptions:
    """Scheduling knobs of a Triton model."""

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000  # how long the dynamic batcher waits to fill a batch
    max_queue_size: int = 64  # bounded queue: requests beyond it are rejected at once
    queue_timeout_us: int = 1_000_000  # a request waiting longer is rejected
    instance_kind: str = "gpu"  # gpu | cpu
    instance_count: int = 1
    warmup_size: int | None = None  # warm-up request: one zero image of this side (export: the traced size)

    def validate(self) -> None:
        """ValueError naming the first bad knob."""
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if any(not 1 <= b <= self.max_batch_size for b in self.preferred_batch_sizes):
            raise ValueError(f"preferred batch sizes {self.preferred_batch_sizes} must lie in 1..{self.max_batch_size}")
        if self.max_queue_size < 1 or self.queue_timeout_us < 1 or self.max_queue_delay_us < 0:
            raise ValueError("queue size and timeout must be positive and the queue delay non-negative")
        if self.instance_kind not in ("gpu", "cpu"):
            raise ValueError(f"instance kind must be gpu or cpu, got {self.instance_kind!r}")
        if self.instance_count < 1 or (self.warmup_size is not None and self.warmup_size < 1):
            raise ValueError("instance count and warm-up size must be >= 1")


def quote(text: str) -> str:
    """A protobuf text-format string literal (escapes quotes, backslashes, control and non-ASCII bytes)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor(spec: TensorSpec, is_input: bool) -> str:
    lines = [f"    name: {quote(spec.name)}", f"    data_type: {spec.data_type}"]
    if is_input and spec.format:
        lines.append(f"    format: {spec.format}")
    lines.append(f"    dims: {_dims(spec.dims)}")
    if spec.label_file:
        lines.append(f"    label_filename: {quote(LABELS_FILE)}")
    return "  {\n" + "\n".join(lines) + "\n  }"


def render_config(
    name: str,
    kind: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    classes: list[str],
    options: ServingOptions,
    header: str = "",
    *,
    batched: bool = True,
    parameters: dict[str, str] | None = None,
) -> str:
    """The config.pbtxt text: platform, batching, bounded queue, instances, warm-up and the model-kind parameter.

    batched False: max_batch_size 0 (dims are the whole shape, one request per run, as torchvision detection graphs
    take one image) and no dynamic batching; the batch and queue knobs of options are then unused. parameters: more
    string parameters after model_kind and classes."""
    options.validate()
    warm = options.warmup_size or 128
    warm_inputs = "\n".join(
        f"    inputs {{\n      key: {quote(t.name)}\n      value {{\n        data_type: {t.data_type}\n"
        f"        dims: {_dims(tuple(warm if d == -1 else d for d in t.dims))}\n"
        f"        zero_data: true\n      }}\n    }}"
        for t in inputs
    )
    sep = ",\n"
    input_block = sep.join(_tensor(t, True) for t in inputs)
    output_block = sep.join(_tensor(t, False) for t in outputs)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    extra = "".join(
        f"parameters {{\n  key: {quote(key)}\n  value {{ string_value: {quote(value)} }}\n}}\n"
        for key, value in (parameters or {}).items()
    )
    batching = (
        f"""dynamic_batching {{
  preferred_batch_size: {_dims(options.preferred_batch_sizes)}
  max_queue_delay_microseconds: {options.max_queue_delay_us}
  default_queue_policy {{
    timeout_action: REJECT
    default_timeout_microseconds: {options.queue_timeout_us}
    allow_timeout_override: true
    max_queue_size: {options.max_queue_size}
  }}
}}
"""
        if batched
        else ""
    )
    return f"""{comment}name: {quote(name)}
platform: {quote(PLATFORM)}
max_batch_size: {options.max_batch_size if batched else 0}
input [
{input_block}
]
output [
{output_block}
]
{batching}instance_group [
  {{
    count: {options.instance_count}
    kind: {"KIND_GPU" if options.instance_kind == "gpu" else "KIND_CPU"}
  }}
]
model_warmup [
  {{
    name: "zero_image"
    batch_size: 1
{warm_inputs}
  }}
]
parameters {{
  key: "model_kind"
  value {{ string_value: {quote(kind)} }}
}}
parameters {{
  key: "classes"
  value {{ string_value: {quote(json.dumps(classes))} }}
}}
{extra}"""
