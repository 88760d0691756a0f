"""Whether a state dict fits a model: the first key that does not, as a sentence for a one-line error."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


def first_mismatch(
    given: Mapping[str, object], expected: Mapping[str, tuple[int, ...]], arch: str, ignore_prefixes: Iterable[str] = ()
) -> str | None:
    """Name the first key of `given` (file order) that is no tensor, unknown to `expected` or of another shape,
    else the first key of `expected` that `given` lacks; None when every key fits. Keys under ignore_prefixes
    (e.g. an ImageNet head that is replaced) are skipped."""
    ignore = tuple(ignore_prefixes)
    for key, value in given.items():
        if not isinstance(key, str):
            return f"key {key!r} is not a parameter name"
        if key.startswith(ignore):
            continue
        if not isinstance(value, torch.Tensor):
            return f"key {key!r} holds a {type(value).__name__}, not a tensor"
        if key not in expected:
            return f"key {key!r} is not part of {arch}"
        if tuple(value.shape) != tuple(expected[key]):
            return f"key {key!r} has shape {tuple(value.shape)}, {arch} expects {tuple(expected[key])}"
    for key in expected:
        if key not in given:
            return f"key {key!r} of {arch} is missing"
    return None
