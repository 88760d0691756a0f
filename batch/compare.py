"""Compare two pseudo-label outputs image by image (label PNGs exactly, maps within a tolerance)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

import numpy as np
from PIL import Image

from batch.store import ArrowStore, LocalStore, open_store


def _npz(store: LocalStore | ArrowStore, key: str) -> dict[str, np.ndarray] | None:
    raw = store.read_bytes(key)
    if raw is None:
        return None
    with np.load(io.BytesIO(raw)) as f:
        return {k: f[k] for k in f.files}


def _png(store: LocalStore | ArrowStore, key: str) -> np.ndarray | None:
    raw = store.read_bytes(key)
    if raw is None:
        return None
    with Image.open(io.BytesIO(raw)) as img:
        return np.asarray(img).copy()


def compare_outputs(
    a: str | os.PathLike | LocalStore | ArrowStore,
    b: str | os.PathLike | LocalStore | ArrowStore,
    ids: Iterable[str],
    atol: float = 1e-6,
) -> list[str]:
    """Differences between two outputs for `ids` (empty when labels are identical and maps agree within atol)."""
    sa, sb = open_store(a), open_store(b)
    problems = []
    for i in ids:
        la, lb = _png(sa, f"labels/{i}.png"), _png(sb, f"labels/{i}.png")
        ma, mb = _npz(sa, f"maps/{i}.npz"), _npz(sb, f"maps/{i}.npz")
        if la is None or lb is None or ma is None or mb is None:
            problems.append(f"{i}: missing in {'the first' if la is None or ma is None else 'the second'} output")
            continue
        if la.shape != lb.shape or not np.array_equal(la, lb):
            problems.append(f"{i}: label PNGs differ")
        if not np.array_equal(ma["class_ids"], mb["class_ids"]):
            problems.append(f"{i}: class ids differ")
        elif ma["maps"].shape != mb["maps"].shape:
            problems.append(f"{i}: map shapes differ {ma['maps'].shape} vs {mb['maps'].shape}")
        else:
            diff = float(np.abs(ma["maps"].astype(np.float32) - mb["maps"].astype(np.float32)).max(initial=0.0))
            if diff > atol:
                problems.append(f"{i}: maps differ by up to {diff:.3g}")
    return problems
