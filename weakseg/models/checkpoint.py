"""Checkpoints that load without unpickling arbitrary objects.

A run folder holds `model.safetensors` (weights; its metadata carries the model kind and config as JSON)
and `resume.pt` (optimizer and progress, read with torch.load(weights_only=True)).
`--model` anywhere accepts a run folder or a `.safetensors` file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as st_save

from weakseg.errors import CheckpointError
from weakseg.io import atomic_write_bytes, sha256_file

WEIGHTS_NAME = "model.safetensors"
RESUME_NAME = "resume.pt"


def resolve_weights(path: str | os.PathLike) -> Path:
    """The weights file of a run folder or the file itself; CheckpointError if absent."""
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_NAME
    if not p.is_file():
        raise CheckpointError(f"{p}: no checkpoint found (expected a run folder or a .safetensors file)")
    return p


def save_weights(
    path: str | os.PathLike,
    model: torch.nn.Module,
    kind: str,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write model weights plus {kind, config, extra} metadata to a safetensors file atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "kind": kind,
        "config": json.dumps(config, sort_keys=True),
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    atomic_write_bytes(path, st_save(state, metadata=meta))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return {"kind", "config", "extra"} of a checkpoint without loading its tensors."""
    p = resolve_weights(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{p}: not a readable safetensors checkpoint ({e})") from e
    if "kind" not in meta or "config" not in meta:
        raise CheckpointError(f"{p}: checkpoint lacks weakseg metadata (kind/config)")
    try:
        return {
            "kind": meta["kind"],
            "config": json.loads(meta["config"]),
            "extra": json.loads(meta.get("extra", "{}")),
        }
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: corrupt checkpoint metadata ({e})") from e


def load_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load weights into model strictly; CheckpointError names the file on any mismatch."""
    p = resolve_weights(path)
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{p}: corrupt checkpoint ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{p}: weights do not match the model ({' '.join(first[:2])[:300]})") from e


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a weights file or run folder's weights (the model checksum recorded in manifests)."""
    return sha256_file(resolve_weights(path))


def save_resume(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save resumable training state (tensors, numbers, strings, nested containers) atomically."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_resume(path: str | os.PathLike) -> dict[str, Any]:
    """Load resumable training state with torch.load(weights_only=True)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot resume from this file ({type(e).__name__}: {str(e)[:200]})") from e
