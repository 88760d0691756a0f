"""Seeded, deterministic K-means (k-means++ initialisation, Lloyd iterations) in torch, float64 on the CPU.

Used to build the OoD clusters P^ood of W-OoD (Sec. 4.3.2). Same input and seed give the same result,
bit for bit: the initialisation draws from a private generator and ties go to the lowest index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakseg.errors import WeaksegError


@dataclass
class KMeansResult:
    """Centres [K, D] (float32), the cluster of every point [N] and the final inertia."""

    centres: torch.Tensor
    assign: torch.Tensor
    inertia: float
    iterations: int


def _sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [N, K] computed exactly (no |x|^2 - 2xc + |c|^2 cancellation)."""
    return (x[:, None, :] - c[None, :, :]).pow(2).sum(-1)


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 100, tol: float = 0.0) -> KMeansResult:
    """Cluster the rows of x [N, D] into k groups; k-means++ seeding from `seed`, at most `iters` Lloyd steps."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise WeaksegError(f"K-means needs a non-empty [N, D] feature matrix, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise WeaksegError(f"K-means with K={k} needs 1 <= K <= number of points ({n})")
    pts = x.detach().to("cpu", torch.float64)
    gen = torch.Generator().manual_seed(int(seed))
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [pts[first]]
    closest = _sq_dist(pts, pts[first][None])[:, 0]
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # every remaining point coincides with a centre: take the next unused index
            used = {int(torch.nonzero((pts == c).all(1))[0]) for c in centres}
            nxt = next(i for i in range(n) if i not in used)
        else:
            nxt = int(torch.multinomial(closest / total, 1, generator=gen))
        centres.append(pts[nxt])
        closest = torch.minimum(closest, _sq_dist(pts, pts[nxt][None])[:, 0])
    c = torch.stack(centres)
    assign = torch.full((n,), -1, dtype=torch.long)
    it = 0
    for it in range(1, iters + 1):  # noqa: B007 - `it` is read after the loop (the iterations run)
        d = _sq_dist(pts, c)
        new_assign = d.argmin(1)
        counts = torch.bincount(new_assign, minlength=k)
        for empty in torch.nonzero(counts == 0)[:, 0].tolist():  # refill an empty cluster with the worst-fit point
            worst = int(d.gather(1, new_assign[:, None])[:, 0].argmax())
            new_assign[worst] = empty
            d[worst] = float("inf")
            d[worst, empty] = 0.0
        sums = torch.zeros_like(c).index_add_(0, new_assign, pts)
        new_c = sums / torch.bincount(new_assign, minlength=k).clamp_min(1)[:, None].to(pts.dtype)
        shift = float((new_c - c).pow(2).sum())
        c = new_c
        converged = torch.equal(new_assign, assign) or shift <= tol
        assign = new_assign
        if converged:
            break
    inertia = float(_sq_dist(pts, c).gather(1, assign[:, None]).sum())
    return KMeansResult(c.to(torch.float32), assign, inertia, it)
