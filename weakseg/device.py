"""Device selection: always a parameter (`--device cpu|cuda|auto`), never hard-coded."""

from __future__ import annotations

import torch

from weakseg.errors import WeaksegError


def resolve_device(name: str = "auto") -> torch.device:
    """Map cpu|cuda|cuda:N|auto to a torch.device; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise WeaksegError(f"--device {name} requested but no CUDA device is available (use --device cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise WeaksegError(f"unknown device {name!r}; use cpu, cuda or auto")


def set_threads(threads: int | None) -> None:
    """Fix torch's CPU intra-op thread count (None leaves torch's default)."""
    if threads is not None:
        if threads < 1:
            raise WeaksegError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
