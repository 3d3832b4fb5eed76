"""The random walk of PSA (Ahn & Kwak, CVPR 2018) that propagates relevance maps into masks.

T = A^beta with each column divided by its sum (self-loops a_ii = 1 included), A holding the
affinities a_ij = exp(-mean_d |f_i - f_j|) of AffinityNet features within a radius
(``wsss_core.affinity.pairs``); maps <- maps x T applied 2^logt times. The background score
(1 - max_c map_c)^alpha is walked with the classes and the argmax is the mask. With
``normalise``, each walked channel is first scaled back to the peak it had before the walk (1
for every class map): the walk averages every score with its neighbours', which lowers the peak
of a small or thin object far more than that of the wide background, and the argmax then loses
the object.

The walk runs on the sparse neighbourhood (a CSR transition matrix with one row per cell and
one entry per neighbour); ``random_walk_dense`` is the dense N x N formulation of PSA
(``infer_aff.py``: T squared logt times, one product with the maps), kept for tests and
benchmarks. ``label_features`` gives the ground-truth affinities of a label map, to bound
what the walk can reach (``wsss_core.walk.ceiling``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from wsss_core.affinity.pairs import (
    check_radius,
    downsample_labels,
    full_offsets,
    offset_affinities,
    offsets_inside,
)
from wsss_core.config import schema_field
from wsss_core.data.palette import IGNORE_INDEX

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


@dataclass(frozen=True)
class WalkParams:
    """The random walk's parameters (config section ``walk``; defaults: the config schema's)."""

    alpha: float = schema_field("walk.alpha")
    beta: float = schema_field("walk.beta")
    logt: int = schema_field("walk.logt")
    radius: int = schema_field("walk.radius")
    normalise: bool = schema_field("walk.normalise")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Its config keys (section ``walk``)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> WalkParams:
        """The walk's keys of config section ``walk``; a bad value is a ValueError naming it."""
        return cls(**{key: _checked(key, cfg[key]) for key in cls.keys()})

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``walk_maps`` after ``alpha``."""
        return {key: getattr(self, key) for key in self.keys() if key != "alpha"}


# what each walk key must be: (integer, lowest allowed value, above it strictly, wording)
_WALK_KEY_RULES = {
    "alpha": (False, 0, True, "a positive number"),
    "beta": (False, 0, True, "a positive number"),
    "logt": (True, 0, False, "a non-negative integer"),
    "radius": (True, 1, False, "a positive integer"),
}


def _checked(key: str, value: Any) -> Any:
    """``value`` of walk key ``key`` as its type, or a ValueError that names the key."""
    if key == "normalise":
        if not isinstance(value, bool):
            raise ValueError(f"walk.normalise must be true or false, got {value!r}")
        return value
    integer, low, strict, need = _WALK_KEY_RULES[key]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if (
        not number
        or (integer and not float(value).is_integer())
        or (value <= low if strict else value < low)
    ):
        raise ValueError(f"walk.{key} must be {need}, got {value!r}")
    return int(value) if integer else float(value)


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
    weight = offset_affinities(features, offsets, radius).pow(beta)  # 0 off the grid
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
        torch.arange(h, device=features.device),
        torch.arange(w, device=features.device),
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
    aff = dense_affinity_matrix(features.to(dtype), check_radius(radius)).pow(beta)
    trans = aff / aff.sum(dim=0, keepdim=True)
    for _ in range(logt):
        trans = trans @ trans
    return (maps.to(dtype).reshape(c, h * w) @ trans).reshape(c, h, w).to(maps.dtype)


def channel_peaks(scores: torch.Tensor) -> torch.Tensor:
    """The maximum of each channel of [C, H, W] as [C]."""
    return scores.flatten(1).max(dim=1).values


def rescale_to_peaks(scores: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """Each channel of [C, H, W] scaled so that its maximum is ``peaks`` [C]; a channel whose
    maximum is <= 0 is left as it is."""
    current = channel_peaks(scores).view(-1, 1, 1)
    factor = peaks.to(scores.dtype).view(-1, 1, 1) / torch.where(current > 0, current, 1.0)
    return torch.where(current > 0, scores * factor, scores)


def walk_maps(
    maps: torch.Tensor,
    features: torch.Tensor,
    alpha: float,
    radius: int = 5,
    beta: float = 8,
    logt: int = 8,
    normalise: bool = False,
) -> torch.Tensor:
    """PSA inference for one image: class maps [K, H, W] in [0, 1] at image size -> walked
    scores [K + 1, H, W] (channel 0 background).

    The background (1 - max)^alpha is added at image size, all channels are area-pooled to the
    feature grid, walked, and upsampled bilinearly back to H x W; with ``normalise`` each
    channel is then scaled back to the peak it had at image size before the walk
    (``rescale_to_peaks``). The defaults are PSA's (``infer_aff.py``), which leaves the
    walked scores as they are; the workflow passes the config's (``WalkParams``).
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be [K, H, W], got shape {tuple(maps.shape)}")
    size = maps.shape[1:]
    scores = add_background(maps.float(), alpha).to(features.dtype)
    grid = F.interpolate(scores.unsqueeze(0), size=features.shape[1:], mode="area")[0]
    walked = random_walk(grid, features, radius=radius, beta=beta, logt=logt)
    walked = F.interpolate(walked.unsqueeze(0), size=size, mode="bilinear", align_corners=False)[0]
    return rescale_to_peaks(walked, channel_peaks(scores)) if normalise else walked


def scores_to_mask(scores: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Argmax of [1 + len(classes), H, W] scores (background first) as a uint8 label mask:
    0 for background, c + 1 for foreground class index c."""
    if scores.shape[0] != len(classes) + 1:
        raise ValueError(
            f"{scores.shape[0]} score channels for {len(classes)} classes + background"
        )
    labels = torch.tensor([0] + [c + 1 for c in classes], dtype=torch.uint8, device=scores.device)
    return labels[scores.argmax(dim=0)]
