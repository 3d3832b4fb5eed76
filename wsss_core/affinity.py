"""Pixel affinities and the random walk of Ahn & Kwak, "Learning Pixel-level Semantic Affinity
with Image-level Supervision" (CVPR 2018, "PSA").

Everything here works on a feature grid of h x w cells:

- pair labels: for every pair of cells (i, j) closer than ``radius`` (0 < dy^2 + dx^2 <
  radius^2), 1 when both carry the same label, 0 when they differ, ignored when either is
  unsure (255). Positive pairs are split into background and foreground pairs;
- the balanced loss L = L_bg_pos / 2 + L_fg_pos / 2 + L_neg over those pairs, with
  -log a for positives and -log(1 - a) for negatives, averaged within each group;
- affinities a_ij = exp(-mean_d |f_i - f_j|) from AffinityNet features;
- the random walk: T = A^beta with each column divided by its sum (self-loops a_ii = 1
  included), maps <- maps x T applied 2^logt times.

Pairs are stored as planes, one per neighbour offset: ``x[..., k, y, x]`` belongs to the pair
((y, x), (y + dy_k, x + dx_k)) with (dy_k, dx_k) = ``neighbour_offsets(radius)[k]``; every
unordered pair appears once, and pairs reaching outside the grid are never labelled.

The walk runs on the sparse neighbourhood (a CSR transition matrix with one row per cell and
one entry per neighbour); ``random_walk_dense`` is the dense N x N formulation of PSA
(``infer_aff.py``: T squared logt times, one product with the maps), kept for tests and
benchmarks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsss_core.palette import IGNORE_INDEX


def _check_radius(radius: int) -> int:
    if int(radius) != radius or radius < 1:
        raise ValueError(f"radius must be a positive integer, got {radius}")
    return int(radius)


def neighbour_offsets(radius: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) reaching every neighbour closer than ``radius`` once per unordered pair.

    In PSA's order: (0, 1) .. (0, r-1), then rows dy = 1 .. r-1 with dx = -(r-1) .. r-1.
    """
    r = _check_radius(radius)
    offsets = [(0, dx) for dx in range(1, r)]
    for dy in range(1, r):
        for dx in range(-r + 1, r):
            if dy * dy + dx * dx < r * r:
                offsets.append((dy, dx))
    return offsets


def full_offsets(radius: int) -> list[tuple[int, int]]:
    """Every offset (dy, dx) with dy^2 + dx^2 < radius^2, (0, 0) included, in raster order."""
    r = _check_radius(radius)
    return [
        (dy, dx)
        for dy in range(-r + 1, r)
        for dx in range(-r + 1, r)
        if dy * dy + dx * dx < r * r
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
    return _offset_affinities(features, neighbour_offsets(radius), radius)


def _offset_affinities(
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


# Mean |f_i - f_j| between two cells of different labels in ``label_features``: exp(-200)
# underflows to 0 in float32 and is about 1e-87 in float64.
LABEL_FEATURE_GAP = 200.0


def label_features(
    labels: torch.Tensor, size: tuple[int, int], ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Features [L, h, w] that give the ground-truth affinities of a label map [H, W].

    The labels are pooled to the grid ``size`` by majority vote (``downsample_labels``) and
    one-hot encoded over the L labels present, scaled so that a_ij = exp(-mean_d |f_i - f_j|)
    is 1 for two cells of the same label and exp(-LABEL_FEATURE_GAP) (0 in float32) for
    different labels. Unsure cells (``ignore_index``) form a label of their own, so a walk on
    these features never crosses an object's border band. Used to bound what the random walk
    can reach from given maps.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {tuple(labels.shape)}")
    grid = downsample_labels(labels.unsqueeze(0), size, ignore_index)[0]
    _, index = torch.unique(grid, return_inverse=True)
    depth = int(index.max()) + 1
    onehot = F.one_hot(index, depth).permute(2, 0, 1).float()
    # two one-hot rows differ by the scale in two of the ``depth`` channels
    return onehot * (LABEL_FEATURE_GAP * depth / 2)


def add_background(maps: torch.Tensor, alpha: float) -> torch.Tensor:
    """Prepend the background score (1 - max_c map_c)^alpha to class maps [K, ...] in [0, 1]."""
    if maps.shape[0] == 0:
        return torch.ones((1, *maps.shape[1:]), dtype=maps.dtype, device=maps.device)
    peak = maps.max(dim=0, keepdim=True).values.clamp(0.0, 1.0)
    return torch.cat([(1.0 - peak) ** alpha, maps], dim=0)


def _walk_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def transition_matrix(features: torch.Tensor, radius: int = 5, beta: float = 8) -> torch.Tensor:
    """The transposed PSA transition matrix T^T as a sparse CSR [N, N], N = h * w (row-major).

    Row j holds T[i, j] = a_ij^beta / sum_i' a_i'j^beta for the neighbours i of cell j (itself
    included, a_jj = 1); rows sum to 1, so maps x T is ``T^T @ maps^T``.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be [D, h, w], got shape {tuple(features.shape)}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    _, h, w = features.shape
    offsets = full_offsets(radius)
    inside = offsets_inside(h, w, offsets, features.device)  # [K, h, w]
    weight = _offset_affinities(features, offsets, radius).pow(beta)  # 0 off the grid
    weight = weight / weight.sum(dim=0, keepdim=True)
    # CSR by rows j in raster order; within a row the offsets are in raster order, so the
    # column indices j + dy * w + dx come out sorted, as CSR requires.
    inside_rows = inside.permute(1, 2, 0).reshape(h * w, -1)
    values = weight.permute(1, 2, 0).reshape(h * w, -1)[inside_rows]
    steps = torch.tensor([dy * w + dx for dy, dx in offsets], device=features.device)
    cells = torch.arange(h * w, device=features.device).view(-1, 1)
    columns = (cells + steps.view(1, -1))[inside_rows]
    crow = torch.zeros(h * w + 1, dtype=torch.int64, device=features.device)
    crow[1:] = inside_rows.sum(dim=1).cumsum(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            crow, columns, values, size=(h * w, h * w), check_invariants=False
        )


def _check_walk_inputs(maps: torch.Tensor, features: torch.Tensor) -> None:
    if maps.ndim != 3 or features.ndim != 3:
        raise ValueError(
            f"maps must be [C, h, w] and features [D, h, w], got {tuple(maps.shape)} and "
            f"{tuple(features.shape)}"
        )
    if maps.shape[1:] != features.shape[1:]:
        raise ValueError(
            f"maps grid {tuple(maps.shape[1:])} differs from features grid "
            f"{tuple(features.shape[1:])}; resize the maps to the feature grid first"
        )


def random_walk(
    maps: torch.Tensor, features: torch.Tensor, radius: int = 5, beta: float = 8, logt: int = 8
) -> torch.Tensor:
    """maps [C, h, w] x T^(2^logt) on the sparse neighbourhood, in the dtype of ``maps``.

    ``features`` [D, h, w] come from the AffinityNet; T = A^beta with each column divided by
    its sum, A holding a_ij = exp(-mean_d |f_i - f_j|) for 0 < dy^2 + dx^2 < radius^2 and
    a_ii = 1. Equals ``random_walk_dense`` (PSA) at a fraction of its time and memory.
    """
    _check_walk_inputs(maps, features)
    dtype = _walk_dtype(maps, features)
    c, h, w = maps.shape
    trans_t = transition_matrix(features.to(dtype), radius, beta)
    state = maps.to(dtype).reshape(c, h * w).t().contiguous()  # [N, C]
    for _ in range(2**logt):
        state = trans_t @ state
    return state.t().reshape(c, h, w).to(maps.dtype)


def dense_affinity_matrix(features: torch.Tensor, radius: int) -> torch.Tensor:
    """Dense A [N, N]: exp(-mean_d |f_i - f_j|) within the radius (a_ii = 1), 0 beyond."""
    d, h, w = features.shape
    flat = features.reshape(d, h * w).t()
    distance = torch.cdist(flat.unsqueeze(0), flat.unsqueeze(0), p=1)[0] / d
    ys, xs = torch.meshgrid(
        torch.arange(h, device=features.device), torch.arange(w, device=features.device),
        indexing="ij",
    )
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    near = (ys[:, None] - ys[None, :]) ** 2 + (xs[:, None] - xs[None, :]) ** 2 < radius**2
    return torch.where(near, torch.exp(-distance), torch.zeros((), dtype=distance.dtype))


def random_walk_dense(
    maps: torch.Tensor, features: torch.Tensor, radius: int = 5, beta: float = 8, logt: int = 8
) -> torch.Tensor:
    """PSA's dense formulation: T = A^beta / column sums, squared logt times, maps x T."""
    _check_walk_inputs(maps, features)
    dtype = _walk_dtype(maps, features)
    c, h, w = maps.shape
    aff = dense_affinity_matrix(features.to(dtype), _check_radius(radius)).pow(beta)
    trans = aff / aff.sum(dim=0, keepdim=True)
    for _ in range(logt):
        trans = trans @ trans
    return (maps.to(dtype).reshape(c, h * w) @ trans).reshape(c, h, w).to(maps.dtype)


def walk_maps(
    maps: torch.Tensor,
    features: torch.Tensor,
    alpha: float,
    radius: int = 5,
    beta: float = 8,
    logt: int = 8,
) -> torch.Tensor:
    """PSA inference for one image: class maps [K, H, W] in [0, 1] at image size -> walked
    scores [K + 1, H, W] (channel 0 background).

    The background (1 - max)^alpha is added at image size, all channels are area-pooled to the
    feature grid, walked, and upsampled bilinearly back to H x W.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be [K, H, W], got shape {tuple(maps.shape)}")
    size = maps.shape[1:]
    scores = add_background(maps.float(), alpha).to(features.dtype)
    grid = F.interpolate(scores.unsqueeze(0), size=features.shape[1:], mode="area")[0]
    walked = random_walk(grid, features, radius=radius, beta=beta, logt=logt)
    return F.interpolate(walked.unsqueeze(0), size=size, mode="bilinear", align_corners=False)[0]


def scores_to_mask(scores: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Argmax of [1 + len(classes), H, W] scores (background first) as a uint8 label mask:
    0 for background, c + 1 for foreground class index c."""
    if scores.shape[0] != len(classes) + 1:
        raise ValueError(
            f"{scores.shape[0]} score channels for {len(classes)} classes + background"
        )
    labels = torch.tensor([0] + [c + 1 for c in classes], dtype=torch.uint8, device=scores.device)
    return labels[scores.argmax(dim=0)]
