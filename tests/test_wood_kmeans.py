"""Seeded, deterministic K-means for the OoD clusters."""

from __future__ import annotations

import pytest
import torch

from weakseg.errors import WeaksegError
from weakseg.ood.kmeans import kmeans


def _blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    labels = torch.arange(4).repeat_interleave(15)
    return centres[labels] + 0.3 * torch.randn(60, 3, generator=g), labels


def test_kmeans_is_seeded_and_deterministic():
    x, _ = _blobs()
    x = x[torch.randperm(60, generator=torch.Generator().manual_seed(1))]
    a, b = kmeans(x, 4, seed=7), kmeans(x, 4, seed=7)
    assert torch.equal(a.centres, b.centres) and torch.equal(a.assign, b.assign) and a.inertia == b.inertia
    noisy = torch.randn(40, 5, generator=torch.Generator().manual_seed(2))
    runs = {tuple(kmeans(noisy, 6, seed=s).assign.tolist()) for s in range(4)}
    assert len(runs) > 1  # the seed matters on structureless data
    assert all(tuple(kmeans(noisy, 6, seed=s).assign.tolist()) in runs for s in range(4))


def test_kmeans_recovers_separated_clusters_and_their_means():
    x, labels = _blobs()
    r = kmeans(x, 4, seed=0)
    for c in range(4):  # every true blob is one cluster
        assert len(set(r.assign[labels == c].tolist())) == 1
    assert len(set(r.assign.tolist())) == 4
    for k in range(4):
        assert torch.allclose(r.centres[k], x[r.assign == k].mean(0), atol=1e-5)


def test_kmeans_edge_cases():
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    r = kmeans(x, 3, seed=0)  # K = N with duplicates: every cluster non-empty
    assert sorted(torch.bincount(r.assign, minlength=3).tolist()) == [1, 1, 1]
    assert kmeans(x, 1).centres.tolist() == [[pytest.approx(7 / 3), pytest.approx(7 / 3)]]
    with pytest.raises(WeaksegError):
        kmeans(x, 4)
    with pytest.raises(WeaksegError):
        kmeans(torch.zeros(0, 2), 1)
