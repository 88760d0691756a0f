"""Atomic file writes, image decoding, file digests and JSON numbers shared by every tier.

Every output file is written to a temporary name in the destination folder and renamed into place,
so a crash never leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from weakseg.errors import DataError


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_float(x: float | None) -> float | None:
    """A float for JSON: nan (and None) become None, numpy scalars plain floats."""
    return None if x is None or np.isnan(x) else float(x)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to path via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write an object as pretty JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an advisory lock on `path` (created if missing) so cooperating processes take turns on one cache entry.

    The lock is released when the block ends or the process dies (the kernel drops it), so a crash never leaves
    the entry locked.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def encode_png(array: np.ndarray, palette: list[int] | None = None, compress_level: int = 6) -> bytes:
    """Encode a uint8 HxW (optionally palettised) or HxWx3 array as PNG bytes (zlib level 0-9)."""
    img = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        if img.mode != "L":
            raise ValueError("a palette needs a single-channel uint8 array")
        img = img.convert("P")
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def atomic_save_png(path: str | os.PathLike, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Save a uint8 array as a PNG atomically (a palette makes it a VOC-style indexed PNG)."""
    atomic_write_bytes(path, encode_png(array, palette))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save arrays into a compressed .npz atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **kwds as allow_pickle
    atomic_write_bytes(path, buf.getvalue())


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into a uint8 HxWx3 RGB array; DataError names the file if it fails."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: image does not decode ({e})") from e


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read an indexed (palette) or greyscale label PNG as uint8 HxW class indices."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L"):
                raise DataError(f"{path}: label PNG must be indexed (P) or greyscale (L), got mode {img.mode}")
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: label PNG does not decode ({e})") from e
