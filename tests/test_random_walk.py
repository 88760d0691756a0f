"""IRN's random walk: the sparse walk equals the authors' dense reference, affinities by hand, no leak to padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weakseg.refine.random_walk import (
    dense_random_walk,
    dense_walk_bytes,
    neighbour_offsets,
    path_affinity,
    random_walk,
)


def _inputs(h: int, w: int, k: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scores [k,h,w] in [0,1] and a random edge map with a few strong boundaries."""
    g = torch.Generator().manual_seed(seed)
    edge = torch.rand(h, w, generator=g, dtype=dtype) ** 3
    return torch.rand(k, h, w, generator=g, dtype=dtype), edge


@pytest.mark.parametrize("radius", [2, 3, 5, 6])
def test_offsets_are_the_half_plane_of_the_open_disc(radius):
    offsets = neighbour_offsets(radius)
    disc = [
        (y, x) for y in range(-radius, radius + 1) for x in range(-radius, radius + 1) if 0 < y * y + x * x < radius**2
    ]
    assert len(offsets) == len(disc) // 2 == len(set(offsets))
    assert all(dy > 0 or (dy == 0 and dx > 0) for dy, dx in offsets)
    assert not {(-dy, -dx) for dy, dx in offsets} & set(offsets)  # one of each pair: the matrix is symmetrised
    assert set(offsets) | {(-dy, -dx) for dy, dx in offsets} == set(disc)


def test_irn_radius_5_has_34_directions_in_path_length_order():
    offsets = neighbour_offsets()
    assert len(offsets) == 34
    assert offsets[:4] == [(0, 1), (1, 0), (0, 2), (2, 0)]  # PathIndex groups directions by path length


def test_a_vertical_wall_cuts_horizontal_affinities_and_keeps_vertical_ones():
    edge = torch.zeros(9, 9)
    edge[:, 4] = 1.0
    aff = path_affinity(edge)
    assert aff.shape == (34, 9, 9)
    d = {o: i for i, o in enumerate(neighbour_offsets())}
    right, right3, down, down3 = aff[d[(0, 1)]], aff[d[(0, 3)]], aff[d[(1, 0)]], aff[d[(3, 0)]]
    assert (right[:, 3] == 0).all() and (right[:, 4] == 0).all()  # into the wall, and out of it
    assert (right[:, :3] == 1).all() and (right[:, 5:8] == 1).all()
    assert (right3[:, 1:4] == 0).all() and (right3[:, 0] == 1).all() and (right3[:, 5] == 1).all()  # paths over it
    assert (down[:8, :4] == 1).all() and (down[:8, 5:] == 1).all() and (down[:, 4] == 0).all()
    assert (down3[:6, 3] == 1).all()
    assert (right[:, 8] == 0).all() and (down[8] == 0).all() and (right3[:, 6:] == 0).all()  # leaves the image: 0
    for dy, dx in neighbour_offsets():  # no pair with both ends on one side of the wall and a path across it
        a = aff[d[(dy, dx)]]
        for x in range(9):
            crosses = min(x, x + dx) <= 4 <= max(x, x + dx)
            inside = 0 <= x + dx < 9
            assert bool((a[: 9 - dy, x] == (0.0 if crosses or not inside else 1.0)).all()), (dy, dx, x)


def test_diagonal_path_takes_the_largest_boundary_on_it():
    edge = torch.zeros(8, 8)
    edge[3, 4] = 0.7
    edge[5, 5] = 0.2
    aff = path_affinity(edge)
    d = {o: i for i, o in enumerate(neighbour_offsets())}
    assert aff[d[(1, 1)], 3, 3] == pytest.approx(0.3)  # path (3,3) (3,4) (4,3) (4,4)
    assert aff[d[(1, 1)], 2, 3] == pytest.approx(0.3)  # ends at (3,4)
    assert aff[d[(1, 0)], 3, 3] == 1.0
    assert aff[d[(2, 2)], 3, 3] == pytest.approx(0.3)  # its path holds (3,4) and (5,5): the larger counts
    assert aff[d[(2, 2)], 4, 4] == pytest.approx(0.8)  # through (5,5) only
    assert aff[d[(2, 2)], 3, 2] == 1.0  # passes between both
    assert aff[d[(2, 1)], 3, 4] == pytest.approx(0.3)  # starts on the 0.7


@pytest.mark.parametrize(
    ("h", "w", "k", "beta", "steps", "seed"),
    [
        (12, 15, 3, 10.0, 256, 0),
        (20, 9, 2, 10.0, 64, 1),
        (12, 15, 1, 1.0, 8, 2),
        (20, 9, 4, 3.5, 1, 3),
        (7, 11, 0, 10.0, 16, 4),
        (5, 5, 2, 10.0, 2, 5),
    ],
)
def test_sparse_equals_dense(h, w, k, beta, steps, seed):
    scores, edge = _inputs(h, w, k, seed)
    sparse = random_walk(scores, edge, beta=beta, steps=steps)
    dense = dense_random_walk(scores, edge, beta=beta, steps=steps)
    assert sparse.shape == dense.shape == (k, h, w)
    torch.testing.assert_close(sparse, dense, rtol=1e-9, atol=1e-11)
    if k:
        assert torch.equal(sparse.argmax(0), dense.argmax(0))
        assert not torch.allclose(sparse, scores * (1 - edge))  # the walk moved something


def test_sparse_equals_dense_in_float32_and_keeps_dtype():
    scores, edge = _inputs(16, 13, 3, 7, torch.float32)
    sparse, dense = random_walk(scores, edge), dense_random_walk(scores, edge)
    assert sparse.dtype == dense.dtype == torch.float32
    torch.testing.assert_close(sparse, dense, rtol=1e-3, atol=5e-4)
    exact = random_walk(scores.double(), edge.double())  # equal to the float64 dense walk (above)
    assert (sparse.double() - exact).abs().max() < 1e-6  # float32 in, float64 inside: 256 steps do not drift


@pytest.mark.parametrize("walk", [random_walk, dense_random_walk])
def test_constant_score_with_zero_edge_stays_constant(walk):
    out = walk(torch.full((2, 11, 13), 0.7, dtype=torch.float64), torch.zeros(11, 13, dtype=torch.float64))
    torch.testing.assert_close(out, torch.full_like(out, 0.7), rtol=0, atol=1e-12)


@pytest.mark.parametrize("walk", [random_walk, dense_random_walk])
def test_columns_of_t_sum_to_one_over_real_nodes(walk):
    """ones @ T = ones: with x * (1 - edge) constant, every node (borders included) keeps the constant."""
    _, edge = _inputs(10, 14, 1, 11)
    edge = edge.clamp(max=0.9)
    scores = (0.5 / (1 - edge))[None]
    for steps in (1, 4, 256):
        out = walk(scores, edge, steps=steps)
        torch.testing.assert_close(out, torch.full_like(out, 0.5), rtol=0, atol=1e-12)


@pytest.mark.parametrize("walk", [random_walk, dense_random_walk])
def test_a_closed_wall_stops_the_walk(walk):
    edge = torch.zeros(10, 12, dtype=torch.float64)
    edge[:, 6] = 1.0
    scores = torch.zeros(1, 10, 12, dtype=torch.float64)
    scores[0, 4:6, 1:3] = 1.0
    out = walk(scores, edge, steps=256)
    assert (out[0, :, 6:] == 0).all()
    assert (out[0, :, :6] > 0).all()  # spread over its whole side


def test_bad_inputs_raise_value_error():
    scores, edge = _inputs(6, 7, 2, 0)
    with pytest.raises(ValueError, match=r"\[K,h,w\]"):
        random_walk(scores[0], edge)
    with pytest.raises(ValueError, match=r"\[h,w\]"):
        random_walk(scores, edge[None])
    with pytest.raises(ValueError, match="edge is"):
        random_walk(scores, edge[:, :5])
    for steps in (0, -4, 2.0, True):
        with pytest.raises(ValueError, match="steps must be a positive int"):
            random_walk(scores, edge, steps=steps)
    with pytest.raises(ValueError, match="power of two"):
        dense_random_walk(scores, edge, steps=3)
    with pytest.raises(ValueError, match="beta"):
        random_walk(scores, edge, beta=0.0)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        random_walk(scores, edge + 0.5)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        path_affinity(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="radius"):
        neighbour_offsets(1)
    assert random_walk(scores[:0], edge, steps=3).shape == (0, 6, 7)  # no classes is fine
    assert random_walk(scores, edge, steps=3).shape == scores.shape  # non-power-of-two steps: sparse only


def test_dense_walk_bytes_counts_the_padded_matrix_and_its_crop():
    n, n_padded = 32 * 32, (32 + 5) * (32 + 10)
    assert dense_walk_bytes(32, 32) == 4 * (n_padded**2 + n**2)
    assert dense_walk_bytes(128, 128, dtype=torch.float64) > 2 * 8 * (128 * 128) ** 2  # > 4 GiB at 512 px in fp64


def _peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM) in KiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1])


def test_sparse_walk_never_holds_an_n_by_n_matrix():
    """A 128 x 128 grid (512 px at stride 4): the dense matrix alone would be 1 GiB in float32."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    except OSError:
        pytest.skip("cannot reset the peak RSS here (needs Linux /proc/self/clear_refs)")
    scores, edge = _inputs(128, 128, 2, 3, torch.float32)
    before = _peak_rss_kib()
    out = random_walk(scores, edge, steps=4)
    grown_mib = (_peak_rss_kib() - before) / 1024
    assert out.shape == scores.shape
    assert grown_mib < 64, f"the sparse walk's peak grew by {grown_mib:.0f} MiB"
