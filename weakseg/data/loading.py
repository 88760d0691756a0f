"""Batching for trainers: in-memory image cache, per-(seed, epoch, index) augmentation, epoch shuffling."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch


class EpochLoader:
    """Yields collated batches of `make_sample(index, rng)` in a shuffled order fixed by (seed, epoch).

    Deterministic and resumable: call set_epoch(e) before iterating. Samples are produced in the
    calling process (decoding is cached by the caller; the model dominates the cost here).
    """

    def __init__(
        self,
        n: int,
        make_sample: Callable[[int, np.random.Generator], dict[str, Any]],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.n, self.make_sample, self.batch_size = n, make_sample, batch_size
        self.seed, self.shuffle, self.drop_last, self.epoch = seed, shuffle, drop_last, 0
        if drop_last and n < batch_size:
            self.drop_last = False  # tiny datasets still train

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order and augmentation stream of an epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = np.arange(self.n)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            samples = [self.make_sample(int(i), np.random.default_rng([self.seed, self.epoch, int(i)])) for i in idx]
            yield collate(samples)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors key-wise; keep other values as lists."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
