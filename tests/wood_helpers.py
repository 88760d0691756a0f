"""Helpers of the W-OoD tests: a small pool of flat-colour images and a mining folder over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weakseg.io import atomic_write_bytes, atomic_write_text
from weakseg.ood.mining import write_mining
from weakseg.ood.pool import open_pool


def make_pool(root: Path, n: int, size: int = 16) -> Path:
    """<root>/OoD with n flat-grey JPEGs (brightness rising with the index), pool.txt and truth.csv
    (every third image 'contains a class')."""
    import io

    from PIL import Image

    pool = root / "OoD"
    ids = [f"ood_{i:05d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        buf = io.BytesIO()
        Image.fromarray(np.full((size, size, 3), int(255 * i / max(1, n - 1)), np.uint8)).save(buf, format="JPEG")
        atomic_write_bytes(pool / "JPEGImages" / f"{image_id}.jpg", buf.getvalue())
    atomic_write_text(pool / "ImageSets" / "pool.txt", "".join(f"{i}\n" for i in ids))
    atomic_write_text(pool / "truth.csv", "id,contains_foreground,classes\n" +
                      "".join(f"{i},{int(k % 3 == 0)},{'a' if k % 3 == 0 else ''}\n" for k, i in enumerate(ids)))
    return pool


def make_candidates(root: Path, n: int) -> Path:
    """A mining folder over make_pool(root, n) whose every image is a candidate (scores descending with the index)."""
    pool = open_pool(make_pool(root, n))
    scores = np.stack([np.linspace(0.99, 0.6, n), np.full(n, 0.1)], axis=1).astype(np.float32)
    out = root / "mine"
    write_mining(out, pool, ["a", "b"], scores, 0.5, {"model": "hand-made"})
    return out
