"""The sparse random walk against PSA's dense formulation, and its invariants."""

from __future__ import annotations

import pytest
import torch

from wsss_core.walk.walk import (
    WalkParams,
    channel_peaks,
    dense_affinity_matrix,
    random_walk,
    random_walk_dense,
    rescale_to_peaks,
    scores_to_mask,
    transition_matrix,
    walk_maps,
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


def test_rescale_to_peaks_scales_each_channel_to_its_peak():
    scores = torch.tensor(
        [
            [[0.5, 2.0], [1.0, 0.0]],
            [[0.0, 0.0], [0.0, 0.0]],
            [[0.1, 0.2], [0.05, 0.0]],
            [[-1.0, -0.5], [-2.0, -0.25]],
        ]
    )
    torch.testing.assert_close(channel_peaks(scores), torch.tensor([2.0, 0.0, 0.2, -0.25]))
    peaks = torch.tensor([1.0, 1.0, 0.5, 1.0])
    expected = torch.tensor(
        [
            [[0.25, 1.0], [0.5, 0.0]],
            [[0.0, 0.0], [0.0, 0.0]],  # maximum 0: left as it is
            [[0.25, 0.5], [0.125, 0.0]],
            [[-1.0, -0.5], [-2.0, -0.25]],  # maximum < 0: left as it is
        ]
    )
    torch.testing.assert_close(rescale_to_peaks(scores, peaks), expected)


def small_object(leak: float = 0.5):
    """A 2 x 2 object (map 1, features 0) on a 12 x 12 background (map 0, features ``leak``)."""
    features = torch.full((1, 12, 12), leak, dtype=torch.float64)
    features[:, 5:7, 5:7] = 0.0
    maps = torch.zeros(1, 12, 12, dtype=torch.float64)
    maps[0, 5:7, 5:7] = 1.0
    obj = torch.zeros(12, 12, dtype=torch.bool)
    obj[5:7, 5:7] = True
    return maps, features, obj


def test_normalised_walk_keeps_a_small_object_that_the_raw_walk_loses():
    """A 2 x 2 object whose affinities to the background are weak but not zero: the walk
    averages its map (1 on the object) with the background's, so the raw walked background
    outscores it on the object itself; scaled back to its peak before the walk (1), the
    object's map is 1 there again, while the background's is below 1 on the object and 1 far
    from it."""
    maps, features, obj = small_object()
    options = {"radius": 3, "beta": 8, "logt": 4}
    raw = walk_maps(maps, features, alpha=4, **options)
    assert (scores_to_mask(raw, [0]) == 0).all()
    assert raw[1, obj].max() < 0.25 < 0.75 < raw[0, obj].min()
    walked = walk_maps(maps, features, alpha=4, normalise=True, **options)
    # both channels peaked at 1 before the walk: each walked channel over its maximum
    torch.testing.assert_close(walked, raw / channel_peaks(raw).view(-1, 1, 1))
    assert torch.equal(scores_to_mask(walked, [0]) == 1, obj)
    assert walked[0, obj].max() < 0.8 and walked[0].max() == 1.0


def test_normalised_walk_keeps_a_faint_background_faint():
    """Where the class covers the whole image (maps >= 0.8), the background (1 - max)^16 peaks
    below 1e-11 before the walk and is scaled back to that peak, not to 1: it wins no pixel,
    as in the raw walk."""
    gen = torch.Generator().manual_seed(3)
    maps = 0.8 + 0.2 * torch.rand(1, 24, 24, generator=gen, dtype=torch.float64)
    features = torch.randn(6, 24, 24, generator=gen, dtype=torch.float64)
    before = 0.2**16
    for radius in (1, 3):
        walked = walk_maps(maps, features, alpha=16, radius=radius, beta=8, logt=6, normalise=True)
        assert 0 < walked[0].max() <= before * (1 + 1e-9)
        assert walked[1].max() == pytest.approx(maps.max().item())
        assert (scores_to_mask(walked, [0]) == 1).all()


def test_walk_params_from_config_name_the_bad_key():
    cfg = {"alpha": 16, "beta": 8, "logt": 8, "radius": 5, "normalise": True, "crf": {}}
    params = WalkParams.from_config(cfg)
    assert params == WalkParams(alpha=16.0, beta=8.0, logt=8, radius=5, normalise=True)
    assert WalkParams.keys() == ("alpha", "beta", "logt", "radius", "normalise")
    assert params.options() == {"beta": 8.0, "logt": 8, "radius": 5, "normalise": True}
    assert WalkParams.from_config({**cfg, "logt": 6.0}).logt == 6
    for key, value, message in [
        ("alpha", 0, "walk.alpha must be a positive number, got 0"),
        ("alpha", True, "walk.alpha must be a positive number, got True"),
        ("beta", -1, "walk.beta must be a positive number, got -1"),
        ("beta", "abc", "walk.beta must be a positive number, got 'abc'"),
        ("logt", -1, "walk.logt must be a non-negative integer, got -1"),
        ("logt", 2.5, "walk.logt must be a non-negative integer, got 2.5"),
        ("radius", 0, "walk.radius must be a positive integer, got 0"),
        ("radius", None, "walk.radius must be a positive integer, got None"),
        ("normalise", "yes", "walk.normalise must be true or false, got 'yes'"),
    ]:
        with pytest.raises(ValueError, match=message):
            WalkParams.from_config({**cfg, key: value})
