"""Pixel affinities of Ahn & Kwak, "Learning Pixel-level Semantic Affinity with Image-level
Supervision" (CVPR 2018, "PSA"): the pairs, their labels and the loss that trains AffinityNet.

Everything here works on a feature grid of h x w cells:

- pair labels: for every pair of cells (i, j) closer than ``radius`` (0 < dy^2 + dx^2 <
  radius^2), 1 when both carry the same label, 0 when they differ, ignored when either is
  unsure (255). Positive pairs are split into background and foreground pairs;
- the balanced loss L = L_bg_pos / 2 + L_fg_pos / 2 + L_neg over those pairs, with
  -log a for positives and -log(1 - a) for negatives, averaged within each group;
- affinities a_ij = exp(-mean_d |f_i - f_j|) from AffinityNet features.

Pairs are stored as planes, one per neighbour offset: ``x[..., k, y, x]`` belongs to the pair
((y, x), (y + dy_k, x + dx_k)) with (dy_k, dx_k) = ``neighbour_offsets(radius)[k]``; every
unordered pair appears once, and pairs reaching outside the grid are never labelled. The
random walk on these affinities is ``wsss_core.walk.walk``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsss_core.data.palette import IGNORE_INDEX


def check_radius(radius: int) -> int:
    if int(radius) != radius or radius < 1:
        raise ValueError(f"radius must be a positive integer, got {radius}")
    return int(radius)


def neighbour_offsets(radius: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) reaching every neighbour closer than ``radius`` once per unordered pair.

    In PSA's order: (0, 1) .. (0, r-1), then rows dy = 1 .. r-1 with dx = -(r-1) .. r-1.
    """
    r = check_radius(radius)
    offsets = [(0, dx) for dx in range(1, r)]
    for dy in range(1, r):
        for dx in range(-r + 1, r):
            if dy * dy + dx * dx < r * r:
                offsets.append((dy, dx))
    return offsets


def full_offsets(radius: int) -> list[tuple[int, int]]:
    """Every offset (dy, dx) with dy^2 + dx^2 < radius^2, (0, 0) included, in raster order."""
    r = check_radius(radius)
    return [
        (dy, dx) for dy in range(-r + 1, r) for dx in range(-r + 1, r) if dy * dy + dx * dx < r * r
    ]


def _shifted(
    x: torch.Tensor, offsets: list[tuple[int, int]], pad: int, value: float
) -> torch.Tensor:
    """Stack x[..., y + dy, x + dx] over ``offsets`` as a new dim -3; outside the grid -> value."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), value=value)
    return torch.stack(
        [padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w] for dy, dx in offsets],
        dim=-3,
    )


def offsets_inside(
    height: int, width: int, offsets: list[tuple[int, int]], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """[K, h, w] bool: whether cell (y, x) + offsets[k] lies on the grid."""
    ys = torch.arange(height, device=device).view(1, -1, 1)
    xs = torch.arange(width, device=device).view(1, 1, -1)
    dy = torch.tensor([o[0] for o in offsets], device=device).view(-1, 1, 1)
    dx = torch.tensor([o[1] for o in offsets], device=device).view(-1, 1, 1)
    return (ys + dy >= 0) & (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)


@dataclass
class PairLabels:
    """Boolean pair planes [..., K, h, w]: same-class background / foreground pairs, and
    different-class pairs. Pairs with an unsure cell, or reaching off the grid, are in none."""

    bg_pos: torch.Tensor
    fg_pos: torch.Tensor
    neg: torch.Tensor


def pair_labels(labels: torch.Tensor, radius: int, ignore_index: int = IGNORE_INDEX) -> PairLabels:
    """Affinity labels of every neighbour pair of a label grid [..., h, w] (0 = background)."""
    offsets = neighbour_offsets(radius)
    labels = labels.long()
    source = labels.unsqueeze(-3)
    target = _shifted(labels, offsets, pad=radius - 1, value=ignore_index)
    valid = (source != ignore_index) & (target != ignore_index)
    same = valid & (source == target)
    return PairLabels(
        bg_pos=same & (source == 0),
        fg_pos=same & (source != 0),
        neg=valid & (source != target),
    )


def downsample_labels(
    labels: torch.Tensor, size: tuple[int, int], ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Majority label of each cell when a label map [B, H, W] is pooled to ``size`` (PSA pools
    its seed scores to the feature grid the same way). Unsure pixels vote for ``ignore_index``;
    ties go to the smaller label."""
    labels = labels.long()
    values = torch.unique(labels)
    onehot = (labels.unsqueeze(1) == values.view(1, -1, 1, 1)).float()
    votes = F.adaptive_avg_pool2d(onehot, size)
    return values[votes.argmax(dim=1)]


def pair_affinities(features: torch.Tensor, radius: int) -> torch.Tensor:
    """a = exp(-mean_d |f_i - f_j|) for every neighbour pair of a feature grid [..., D, h, w].

    Returns [..., K, h, w] in the planes of ``neighbour_offsets``; pairs off the grid get 0.
    """
    return offset_affinities(features, neighbour_offsets(radius), radius)


def offset_affinities(
    features: torch.Tensor, offsets: list[tuple[int, int]], radius: int
) -> torch.Tensor:
    """exp(-mean_d |f(y, x) - f(y + dy, x + dx)|) as [..., K, h, w]; 0 off the grid.

    One offset at a time, so that no [K, D, h, w] copy of the features is ever made. Without
    autograd every offset reuses one [..., D, h, w] buffer: a fresh difference per offset
    made the allocator's peak memory jump between 30 and 700 MiB from run to run.
    """
    h, w = features.shape[-2:]
    pad = radius - 1
    padded = F.pad(features, (pad, pad, pad, pad))
    shifted = (padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w] for dy, dx in offsets)
    if features.requires_grad and torch.is_grad_enabled():
        distances = [(features - view).abs().mean(dim=-3) for view in shifted]
    else:
        buffer = torch.empty_like(features)
        distances = [torch.sub(features, view, out=buffer).abs_().mean(dim=-3) for view in shifted]
    aff = torch.exp(-torch.stack(distances, dim=-3))
    inside = offsets_inside(h, w, offsets, features.device)
    return torch.where(inside, aff, torch.zeros((), dtype=aff.dtype, device=aff.device))


@dataclass
class AffinityLoss:
    """The balanced affinity loss and its three parts (scalars) with their pair counts."""

    total: torch.Tensor
    bg_pos: torch.Tensor
    fg_pos: torch.Tensor
    neg: torch.Tensor
    counts: tuple[int, int, int]


def affinity_loss(aff: torch.Tensor, labels: PairLabels, eps: float = 1e-5) -> AffinityLoss:
    """L = L_bg_pos / 2 + L_fg_pos / 2 + L_neg with -log(a + eps) for the positive groups and
    -log(1 - a + eps) for the negatives, each averaged over its pairs (an empty group adds 0)."""

    def group_mean(nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(nll.dtype)
        return (nll * mask).sum() / mask.sum().clamp(min=1.0)

    pos_nll = -torch.log(aff + eps)
    neg_nll = -torch.log(1.0 + eps - aff)
    bg = group_mean(pos_nll, labels.bg_pos)
    fg = group_mean(pos_nll, labels.fg_pos)
    neg = group_mean(neg_nll, labels.neg)
    counts = (int(labels.bg_pos.sum()), int(labels.fg_pos.sum()), int(labels.neg.sum()))
    return AffinityLoss(total=bg / 2 + fg / 2 + neg, bg_pos=bg, fg_pos=fg, neg=neg, counts=counts)
