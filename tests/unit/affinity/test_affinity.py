"""Pair labels, the balanced affinity loss and pair affinities (wsss_core.affinity)."""

from __future__ import annotations

import math

import pytest
import torch

from wsss_core.affinity.pairs import (
    PairLabels,
    affinity_loss,
    downsample_labels,
    full_offsets,
    neighbour_offsets,
    pair_affinities,
    pair_labels,
)
from wsss_core.walk.walk import add_background, dense_affinity_matrix, scores_to_mask, walk_maps

U = 255


def as_pairs(plane: torch.Tensor, radius: int) -> set[frozenset]:
    """The unordered cell pairs marked in [K, h, w] planes."""
    pairs = set()
    for k, (dy, dx) in enumerate(neighbour_offsets(radius)):
        for y, x in plane[k].nonzero().tolist():
            pairs.add(frozenset({(y, x), (y + dy, x + dx)}))
    return pairs


def pair(a, b) -> frozenset:
    return frozenset({a, b})


def test_offsets_radius_2_and_5():
    assert neighbour_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    assert len(neighbour_offsets(5)) == 34  # PSA's 34 neighbours at radius 5
    full = full_offsets(5)
    assert len(full) == 2 * 34 + 1 and (0, 0) in full
    assert set(full) == {(0, 0)} | set(neighbour_offsets(5)) | {
        (-dy, -dx) for dy, dx in neighbour_offsets(5)
    }
    with pytest.raises(ValueError, match="radius"):
        neighbour_offsets(0)


def test_pair_labels_hand_made_3x3_radius_2():
    # a b c      0 0 1
    # d e f  =   0 U 1     (e unsure)
    # g h i      2 2 1
    labels = torch.tensor([[0, 0, 1], [0, U, 1], [2, 2, 1]])
    a, b, c, d, e, f, g, h, i = [(y, x) for y in range(3) for x in range(3)]
    out = pair_labels(labels, radius=2)
    assert out.bg_pos.shape == (4, 3, 3)
    assert as_pairs(out.bg_pos, 2) == {pair(a, b), pair(a, d), pair(b, d)}
    assert as_pairs(out.fg_pos, 2) == {pair(g, h), pair(c, f), pair(f, i)}
    assert as_pairs(out.neg, 2) == {
        pair(b, c),
        pair(h, i),
        pair(d, g),
        pair(b, f),
        pair(d, h),
        pair(f, h),
    }
    # the 8 pairs touching the unsure cell e are in no group; 20 - 8 = 12 labelled pairs
    total = out.bg_pos.sum() + out.fg_pos.sum() + out.neg.sum()
    assert int(total) == 12
    assert not (out.bg_pos & out.neg).any() and not (out.fg_pos & out.neg).any()


def test_pair_labels_batched_radius_3_counts():
    # one class everywhere, 4 x 4 grid, radius 3: every pair with d^2 < 9 is a positive pair
    labels = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3)]).long()
    out = pair_labels(labels, radius=3)
    cells = [(y, x) for y in range(4) for x in range(4)]
    expected = sum(
        1
        for n, p in enumerate(cells)
        for q in cells[n + 1 :]
        if (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 < 9
    )
    assert int(out.bg_pos[0].sum()) == expected and int(out.fg_pos[0].sum()) == 0
    assert int(out.fg_pos[1].sum()) == expected and int(out.bg_pos[1].sum()) == 0
    assert int(out.neg.sum()) == 0


def test_affinity_loss_hand_made_pairs():
    # one plane of 6 pairs: 2 background-positive, 1 foreground-positive, 2 negative, 1 ignored
    aff = torch.tensor([[[0.5, 0.25, math.exp(-1), 0.5, 0.75, 0.01]]])
    labels = PairLabels(
        bg_pos=torch.tensor([[[1, 1, 0, 0, 0, 0]]], dtype=torch.bool),
        fg_pos=torch.tensor([[[0, 0, 1, 0, 0, 0]]], dtype=torch.bool),
        neg=torch.tensor([[[0, 0, 0, 1, 1, 0]]], dtype=torch.bool),
    )
    loss = affinity_loss(aff, labels, eps=0.0)
    ln2 = math.log(2)
    assert loss.bg_pos.item() == pytest.approx(1.5 * ln2)  # (ln 2 + ln 4) / 2
    assert loss.fg_pos.item() == pytest.approx(1.0)  # -ln e^-1
    assert loss.neg.item() == pytest.approx(1.5 * ln2)  # (-ln 0.5 - ln 0.25) / 2
    assert loss.total.item() == pytest.approx(0.75 * ln2 + 0.5 + 1.5 * ln2)
    assert loss.counts == (2, 1, 2)


def test_affinity_loss_empty_group_adds_zero_and_gradient_signs():
    aff = torch.tensor([0.5, 0.5], requires_grad=True)
    labels = PairLabels(
        bg_pos=torch.tensor([True, False]),
        fg_pos=torch.tensor([False, False]),
        neg=torch.tensor([False, True]),
    )
    loss = affinity_loss(aff, labels, eps=0.0)
    assert loss.fg_pos.item() == 0.0
    assert loss.total.item() == pytest.approx(0.5 * math.log(2) + math.log(2))
    loss.total.backward()
    # positives pull a up (negative gradient), negatives push it down
    assert aff.grad[0] < 0 < aff.grad[1]
    assert aff.grad[0].item() == pytest.approx(-0.5 / 0.5)
    assert aff.grad[1].item() == pytest.approx(1 / 0.5)


def test_pair_affinities_match_dense_and_lie_in_unit_interval():
    torch.manual_seed(0)
    feats = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    radius = 3
    aff = pair_affinities(feats, radius)
    assert aff.shape == (2, len(neighbour_offsets(radius)), 4, 6)
    for b in range(2):
        dense = dense_affinity_matrix(feats[b], radius)
        for k, (dy, dx) in enumerate(neighbour_offsets(radius)):
            for y in range(4):
                for x in range(6):
                    if 0 <= y + dy < 4 and 0 <= x + dx < 6:
                        j = (y + dy) * 6 + x + dx
                        assert aff[b, k, y, x] == pytest.approx(dense[y * 6 + x, j].item())
                        assert 0 < aff[b, k, y, x] <= 1
                    else:
                        assert aff[b, k, y, x] == 0
    same = pair_affinities(torch.ones(3, 4, 4), radius)  # identical features: affinity 1
    inside = same > 0
    assert torch.equal(same[inside], torch.ones(int(inside.sum())))


def test_pair_affinities_with_and_without_autograd_agree_and_differentiate():
    torch.manual_seed(1)
    feats = torch.randn(3, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        buffered = pair_affinities(feats, radius=3)
    leaf = feats.clone().requires_grad_(True)
    aff = pair_affinities(leaf, radius=3)
    assert torch.equal(aff.detach(), buffered)
    # d a / d f_i = -a * sign(f_i - f_j) / D for the pair (i, j) = ((0, 0), (0, 1))
    k = neighbour_offsets(3).index((0, 1))
    aff[k, 0, 0].backward()
    sign = torch.sign(feats[:, 0, 0] - feats[:, 0, 1])
    expected = -buffered[k, 0, 0] * sign / 3
    assert torch.allclose(leaf.grad[:, 0, 0], expected)
    assert torch.allclose(leaf.grad[:, 0, 1], -expected)
    assert leaf.grad.abs().sum() == pytest.approx(2 * expected.abs().sum().item())


def test_downsample_labels_majority():
    labels = torch.tensor(
        [
            [0, 0, 1, 1],
            [0, 3, 1, U],
            [U, U, 2, 2],
            [U, 0, 2, 2],
        ]
    ).unsqueeze(0)
    out = downsample_labels(labels, (2, 2))
    # top-left: three 0 and one 3 -> 0; top-right: three 1 -> 1;
    # bottom-left: three unsure -> 255; bottom-right: all 2 -> 2
    assert out.tolist() == [[[0, 1], [U, 2]]]
    tie = torch.tensor([[[1, 1], [4, 4]]])
    assert downsample_labels(tie, (1, 1)).tolist() == [[[1]]]


def test_add_background_and_scores_to_mask():
    maps = torch.tensor([[[0.2, 0.9]], [[0.5, 0.0]]])  # 2 classes, 1 x 2 image
    scores = add_background(maps, alpha=2)
    assert scores.shape == (3, 1, 2)
    assert scores[0].flatten().tolist() == pytest.approx([0.25, 0.01])
    assert add_background(torch.zeros(0, 2, 3), alpha=4).tolist() == torch.ones(1, 2, 3).tolist()
    mask = scores_to_mask(scores, classes=[4, 11])
    assert mask.dtype == torch.uint8 and mask.tolist() == [[12, 5]]
    with pytest.raises(ValueError, match="score channels"):
        scores_to_mask(scores, classes=[4])


def test_walk_maps_with_radius_1_is_background_plus_resize():
    # radius 1 has no neighbours: the walk is the identity, only pooling and upsampling remain
    maps = torch.zeros(1, 8, 8)
    maps[0, :4, :4] = 1.0
    out = walk_maps(maps, torch.randn(3, 2, 2), alpha=1, radius=1)
    assert out.shape == (2, 8, 8)
    grid = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    expected = torch.nn.functional.interpolate(
        grid.unsqueeze(0), size=(8, 8), mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(out, expected)
    assert scores_to_mask(out, [0])[0, 0] == 1 and scores_to_mask(out, [0])[7, 7] == 0
