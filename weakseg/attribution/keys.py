"""Image keys: compute_maps passes '<image id>@<scale>' to scale_maps; stochastic methods seed from them."""

from __future__ import annotations

import hashlib


def scale_of(image_key: str) -> float | None:
    """The inference scale of an image key ('<id>@<scale>'), or None when it names none."""
    if "@" not in image_key:
        return None
    try:
        return float(image_key.rsplit("@", 1)[1])
    except ValueError:
        return None


def image_id_of(image_key: str) -> str:
    """The image id of an image key (the key without its '@<scale>' suffix)."""
    return image_key.rsplit("@", 1)[0] if scale_of(image_key) is not None else image_key


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string that is the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
