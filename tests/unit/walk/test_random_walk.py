"""The sparse random walk against PSA's dense formulation, and its invariants."""

from __future__ import annotations

import pytest
import torch

from wsss_core.walk.walk import (
    dense_affinity_matrix,
    random_walk,
    random_walk_dense,
    transition_matrix,
)


def make_inputs(c: int, h: int, w: int, d: int = 6, seed: int = 0, scale: float = 0.5):
    gen = torch.Generator().manual_seed(seed)
    maps = torch.rand(c, h, w, generator=gen, dtype=torch.float64)
    feats = scale * torch.randn(d, h, w, generator=gen, dtype=torch.float64)
    return maps, feats


@pytest.mark.parametrize(
    ("h", "w", "radius", "beta", "logt"),
    [
        (7, 9, 5, 8, 8),
        (9, 6, 3, 8, 8),
        (5, 11, 2, 1, 3),
        (8, 8, 4, 2, 0),
        (6, 7, 1, 8, 5),
        (3, 12, 6, 4, 6),
    ],
)
def test_sparse_walk_equals_dense_walk_float64(h, w, radius, beta, logt):
    maps, feats = make_inputs(4, h, w, seed=h * w + radius)
    sparse = random_walk(maps, feats, radius=radius, beta=beta, logt=logt)
    dense = random_walk_dense(maps, feats, radius=radius, beta=beta, logt=logt)
    assert sparse.dtype == torch.float64 and sparse.shape == (4, h, w)
    torch.testing.assert_close(sparse, dense, rtol=1e-6, atol=0)


def test_dense_affinity_is_symmetric_with_unit_diagonal():
    _, feats = make_inputs(1, 6, 7, seed=3)
    aff = dense_affinity_matrix(feats, radius=4)
    torch.testing.assert_close(aff, aff.t(), rtol=1e-12, atol=0)
    assert torch.equal(aff.diagonal(), torch.ones(42, dtype=torch.float64))
    assert ((aff > 0) & (aff <= 1)).sum() == (aff != 0).sum()
    # cells 4 apart in a row are beyond radius 4 (16 is not < 16); 3 apart are within
    assert aff[0, 4] == 0 and aff[0, 3] > 0


def test_transition_matrix_matches_dense_and_is_column_stochastic():
    _, feats = make_inputs(1, 5, 8, seed=4)
    radius, beta = 3, 8
    trans_t = transition_matrix(feats, radius, beta).to_dense()
    aff = dense_affinity_matrix(feats, radius).pow(beta)
    trans = aff / aff.sum(dim=0, keepdim=True)
    torch.testing.assert_close(trans_t, trans.t(), rtol=1e-12, atol=1e-300)
    # columns of T (rows of the stored T^T) sum to 1
    torch.testing.assert_close(trans.sum(dim=0), torch.ones(40, dtype=torch.float64))
    torch.testing.assert_close(trans_t.sum(dim=1), torch.ones(40, dtype=torch.float64))
    # stored entries are exactly the pairs within the radius: a 5 x 5 square for radius 3
    # (corners at d^2 = 8 < 9), so an interior cell has 25 and a corner cell 9
    assert torch.equal(trans_t != 0, aff != 0)
    counts = (trans_t != 0).sum(dim=1).reshape(5, 8)
    assert counts[2, 3] == 25 and counts[0, 0] == 9


def test_walk_keeps_constants_and_degree_weighted_mass():
    maps, feats = make_inputs(3, 8, 9, seed=5)
    radius, beta, logt = 4, 8, 5
    # column-stochastic T: a constant map is a fixed point of maps x T
    const = torch.full((1, 8, 9), 0.7, dtype=torch.float64)
    torch.testing.assert_close(random_walk(const, feats, radius, beta, logt), const)
    # maps x T preserves the mass weighted by the degrees d_j = sum_i a_ij^beta
    # (T = A^beta D^-1 has right eigenvector d with eigenvalue 1)
    degree = dense_affinity_matrix(feats, radius).pow(beta).sum(dim=0).reshape(8, 9)
    walked = random_walk(maps, feats, radius, beta, logt)
    torch.testing.assert_close(
        (walked * degree).sum(dim=(1, 2)), (maps * degree).sum(dim=(1, 2)), rtol=1e-10, atol=0
    )
    # and it spreads the maps: values move towards their (degree-weighted) mean
    assert (walked.std(dim=(1, 2)) < maps.std(dim=(1, 2))).all()


def test_walk_stays_inside_regions_of_equal_features():
    # two regions with very different features: nothing leaks across the border
    feats = torch.zeros(2, 6, 8, dtype=torch.float64)
    feats[:, :, 4:] = 50.0
    maps = torch.zeros(2, 6, 8, dtype=torch.float64)
    maps[0, 2, 1] = 1.0
    maps[1, 3, 6] = 1.0
    walked = random_walk(maps, feats, radius=3, beta=8, logt=8)
    assert walked[0, :, 4:].max() < 1e-100 and walked[1, :, :4].max() < 1e-100
    # within a region of equal features (a_ij = 1), 256 steps flatten the map to the
    # degree-weighted mean: d_source / sum_j d_j, d_j = neighbours of j inside the region
    # (itself included) within radius 3
    cells = [(y, x) for y in range(6) for x in range(4)]
    degree = {p: sum((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 < 9 for q in cells) for p in cells}
    expected = degree[(2, 1)] / sum(degree.values())
    torch.testing.assert_close(
        walked[0, :, :4], torch.full((6, 4), expected, dtype=torch.float64), rtol=1e-9, atol=0
    )


def test_walk_dtype_and_shape_checks():
    maps, feats = make_inputs(2, 5, 5, seed=6)
    out = random_walk(maps.float(), feats.float(), radius=3, beta=8, logt=4)
    assert out.dtype == torch.float32
    ref = random_walk_dense(maps, feats, radius=3, beta=8, logt=4)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="feature grid"):
        random_walk(maps, feats[:, :4], radius=3)
    with pytest.raises(ValueError, match=r"\[C, h, w\]"):
        random_walk(maps[0], feats, radius=3)
