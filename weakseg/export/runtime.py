"""onnxruntime sessions over exported models (no PyTorch import: serving processes stay small)."""

from __future__ import annotations

from pathlib import Path

MIN_SIDE = 32  # smallest input height/width the graphs are exported for
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


SPIN_WAIT_CHOICES = ("on", "off", "default")


def spin_wait_flag(value: str) -> bool | None:
    """--ort-spin-wait on|off|default -> True, False or None (onnxruntime's own default)."""
    return {"on": True, "off": False}.get(value)


def session_options(threads: int | None = None, spin_wait: bool | None = None):
    """onnxruntime SessionOptions: quiet logs, intra-op threads, and whether idle intra-op threads busy-wait.

    spin_wait None keeps onnxruntime's default (busy-wait on); False frees the cores between runs, which a server
    sharing few cores with its RPC threads may prefer.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if spin_wait is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    return options


def ort_session(
    onnx_bytes: bytes, providers: list[str] | None = None, threads: int | None = None, spin_wait: bool | None = None
):
    """An onnxruntime InferenceSession (CPU provider unless told otherwise) over serialized model bytes."""
    import onnxruntime as ort

    return ort.InferenceSession(onnx_bytes, session_options(threads, spin_wait), providers=providers or [CPU])


def gpu_present() -> bool:
    """True when an NVIDIA driver is loaded on this machine (checked without initialising CUDA)."""
    return Path("/proc/driver/nvidia/version").exists()


def providers_for(device: str) -> list[str]:
    """onnxruntime providers for --device cpu|cuda|auto: CUDA first where the build has it and a GPU is present."""
    import onnxruntime as ort

    if device == "cpu":
        return [CPU]
    if device not in ("cuda", "auto") and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or auto")
    if CUDA in ort.get_available_providers() and (device != "auto" or gpu_present()):
        return [CUDA, CPU]
    if device == "auto":
        return [CPU]
    raise ValueError(f"--device {device} asked for, but this onnxruntime build has no CUDA provider")
