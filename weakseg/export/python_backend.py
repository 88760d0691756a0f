"""Python-backend variant of an exported repository entry, for Triton builds without the ONNX Runtime backend.

The CPU-only Triton that ships inside `nvidia-pytriton` has the python backend only. From an entry written
by `weakseg export` (`<repo>/<name>/config.pbtxt` with platform onnxruntime_onnx, `labels.txt`,
`<v>/model.onnx`) this writes `<dest>/<name>/` with the same inputs, outputs, max_batch_size, dynamic
batching, warm-up and parameters (model_kind, classes), `backend: "python"`, KIND_CPU instances, and in
each version folder `model.py` (weakseg/export/python_backend_model.py: the same ONNX run by onnxruntime)
beside a copy of `model.onnx`. The onnxruntime_onnx entry stays as it is for GPU deployments.
"""

from __future__ import annotations

import os
from pathlib import Path

from weakseg.export.repository import ExportError
from weakseg.export.triton_config import LABELS_FILE, PLATFORM
from weakseg.io import atomic_write_bytes, atomic_write_text

MODEL_TEMPLATE = Path(__file__).with_name("python_backend_model.py")
BACKEND = "python"


def _versions(entry: Path) -> list[str]:
    """Numeric version folders of an entry that hold a model.onnx, in numeric order."""
    found = [p.name for p in entry.iterdir() if p.is_dir() and p.name.isdigit() and (p / "model.onnx").is_file()]
    return sorted(found, key=int)


def python_backend_config(
    text: str, name: str | None = None, onnx_threads: int = 0, instance_count: int | None = None
) -> str:
    """The config.pbtxt text of the python-backend variant of an onnxruntime_onnx config.pbtxt text."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    try:
        config = text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as e:
        raise ExportError(f"config.pbtxt does not parse as a Triton ModelConfig: {e}") from e
    if config.platform != PLATFORM or config.backend not in ("", "onnxruntime"):
        raise ExportError(f"expected a {PLATFORM} entry, got platform {config.platform!r} backend {config.backend!r}")
    if "model_kind" not in config.parameters or "classes" not in config.parameters:
        raise ExportError("config.pbtxt lacks the model_kind and classes parameters of a weakseg export")
    config.platform = ""
    config.backend = BACKEND
    config.name = name or config.name
    groups = list(config.instance_group) or [mc.ModelInstanceGroup(count=1)]
    del config.instance_group[:]
    for group in groups:
        config.instance_group.add(
            name=group.name, count=instance_count or group.count or 1, kind=mc.ModelInstanceGroup.KIND_CPU
        )
    config.parameters["onnx_threads"].string_value = str(onnx_threads)
    header = (
        f"# python-backend variant of a weakseg {PLATFORM} entry (model.py runs model.onnx with onnxruntime, CPU)\n"
        f"# for Triton builds with the python backend only; the {PLATFORM} entry is the GPU deployment\n"
    )
    return header + text_format.MessageToString(config)


def write_python_backend_entry(
    source_entry: str | os.PathLike,
    dest_repo: str | os.PathLike,
    name: str | None = None,
    versions: list[int] | None = None,
    onnx_threads: int = 0,
    instance_count: int | None = None,
    force: bool = False,
) -> Path:
    """Write the python-backend variant of `source_entry` (an exported model folder) as `<dest_repo>/<name>/`.

    versions: which version folders to wrap (default: every one holding a model.onnx); an existing wrapped
    version is refused unless force. onnx_threads: onnxruntime intra-op threads per instance (0 = its default).
    """
    source = Path(source_entry)
    config_path = source / "config.pbtxt"
    if not config_path.is_file():
        raise ExportError(f"{config_path}: not found (expected an entry written by `weakseg export`)")
    available = _versions(source)
    wanted = available if versions is None else [str(v) for v in versions]
    missing = [v for v in wanted if v not in available]
    if missing or not wanted:
        raise ExportError(f"{source}: no <version>/model.onnx for version(s) {', '.join(missing) or 'any'}")
    name = name or source.name
    dest = Path(dest_repo) / name
    if dest.resolve() == source.resolve():
        raise ExportError(f"{dest}: the python-backend variant needs its own repository folder, not the source's")
    text = python_backend_config(config_path.read_text(), name, onnx_threads, instance_count)
    existing = [v for v in wanted if (dest / v / "model.py").exists()]
    if existing and not force:
        raise ExportError(f"{dest}: version(s) {', '.join(existing)} already exist (pass force=True / --force)")
    for version in wanted:
        atomic_write_bytes(dest / version / "model.onnx", (source / version / "model.onnx").read_bytes())
        atomic_write_text(dest / version / "model.py", MODEL_TEMPLATE.read_text())
    if (source / LABELS_FILE).is_file():
        atomic_write_text(dest / LABELS_FILE, (source / LABELS_FILE).read_text())
    atomic_write_text(dest / "config.pbtxt", text)
    return dest
