"""Layer-wise relevance propagation rules of Chefer, Gur & Wolf (CVPR 2021), batched per pair.

Each rule maps the relevance ``R`` of a layer's output to its inputs, with the semantics of
the reference implementation (``modules/layers_ours.py`` of hila-chefer/
Transformer-Explainability, alpha=1/beta=0). The inputs a layer saw in the forward pass
are per *image*; the relevances are per (image, class) *pair*. Two layouts: with ``idx``
(int64 [P]) the relevances have a leading pair dimension P and ``idx`` names the image of
every pair (leading dimension B of the inputs); with ``idx`` None the inputs broadcast
against the relevances as they are (the relevance walk keeps pairs as [B, K, ...] and the
inputs as [B, 1, ...], so nothing per image is copied per class). What does not depend
on the relevance (the denominators ``z``, their stabilised inverses, the input shares of
an addition) is computed once per image and shared by all of its classes; each rule then
costs the pairs one multiplication by it (plus, for a linear layer, its two matrix
products).

Two variants of the rules exist in the reference and both are offered:

* ``"chefer"`` (``layers_ours.py``, used by the paper's transformer attribution): the
  alpha=1/beta=0 rule on linear layers normalises by all positive contributions
  ``z = x+ w+ + x- w-``; an addition splits ``R`` in proportion to ``x_i * R / (a + b)``
  and rescales each part so that the two parts share ``sum(R)`` by their absolute sums.
  The reference takes those sums over the whole batch (correct only for a batch of one);
  here they are taken per pair, over tokens and channels.
* ``"original"`` (``layers_lrp.py``, which the paper's evaluation uses for its ``full_lrp``
  and ``lrp_last_layer`` baselines): ``x+ w+`` and ``x- w-`` are each normalised by their
  own sum, and an addition splits ``R`` by ``x_i * R / (a + b)`` without rescaling.

LayerNorm, GELU, softmax and dropout pass relevance through unchanged (as the reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-9
VARIANTS = ("chefer", "original")


def safe_inverse(b: Tensor) -> Tensor:
    """``1 / b`` with the reference's stabiliser: ``1 / (b + 1e-9)``, and 0 where ``b == 0``.

    (The reference writes the denominator as ``clamp(b, min=eps) + clamp(b, max=eps)``,
    which is ``b + eps`` for every ``b``; a denominator of exactly 0, i.e. ``b == -eps``,
    becomes ``eps``.) ``a * safe_inverse(b)`` is the reference's ``safe_divide(a, b)`` up to
    the rounding of one multiplication.
    """
    # (b != 0) / (b + eps); the one infinity, 1/0 where b == -eps, becomes 1/eps; NaN stays
    inv = b.ne(0).to(b.dtype).div_(b + EPS)
    return inv.nan_to_num_(nan=float("nan"), posinf=1 / EPS, neginf=-float("inf"))


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """``a / b`` with the reference's stabiliser: ``a / (b + 1e-9)``, and 0 where ``b == 0``."""
    den = b + EPS
    den = torch.where(den == 0, EPS, den)
    return torch.where(b == 0, 0.0, a / den)


def take(x: Tensor, idx: Tensor | None) -> Tensor:
    """Rows of per-image tensor ``x`` for every pair (``idx`` None: ``x`` as it is)."""
    return x if idx is None else x.index_select(0, idx)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown LRP variant '{variant}'; choose one of {VARIANTS}")


def linear_relprop(
    relevance: Tensor,
    x: Tensor,
    weight: Tensor,
    idx: Tensor | None,
    variant: str = "chefer",
    out: Tensor | None = None,
) -> Tensor:
    """alpha=1/beta=0 rule of ``y = x W^T + b`` (the bias takes no relevance).

    ``relevance`` [P, ..., out], ``x`` [B, ..., in] -> relevance of ``x`` [P, ..., in].

    ``chefer``: ``R_in = x+ (s W+) + x- (s W-)`` with ``s = R / (x+ W+ + x- W-)``, written
    as ``(x (s W) + |x| (s |W|)) / 2`` (the same sum, since ``W+- = (W +- |W|) / 2``), so
    that no clamped copies of the weight are made. ``out``: ``x W^T`` (the layer's output
    less its bias) when the forward pass has it; the denominator is then
    ``(x W^T + |x| |W|^T) / 2``, one matrix product instead of two.
    """
    _check_variant(variant)
    if variant == "chefer":
        half_x, half_abs_x, w_abs = x * 0.5, x.abs().mul_(0.5), weight.abs()
        if out is None:
            z = F.linear(x.clamp(min=0), weight.clamp(min=0))
            z += F.linear(x.clamp(max=0), weight.clamp(max=0))
        else:
            z = torch.add(F.linear(half_abs_x, w_abs), out, alpha=0.5)
        s = relevance * take(safe_inverse(z), idx)
        result = torch.matmul(s, weight).mul_(take(half_x, idx))
        return result.addcmul_(torch.matmul(s, w_abs), take(half_abs_x, idx))
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    s_pos = relevance * take(safe_inverse(F.linear(x_pos, w_pos)), idx)
    s_neg = relevance * take(safe_inverse(F.linear(x_neg, w_neg)), idx)
    result = torch.matmul(s_pos, w_pos).mul_(take(x_pos, idx))
    return result.addcmul_(torch.matmul(s_neg, w_neg), take(x_neg, idx))


def add_relprop(
    relevance: Tensor,
    a: Tensor,
    b: Tensor,
    idx: Tensor | None,
    variant: str = "chefer",
    pair_dims: int = 1,
    inv: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Split the relevance of ``a + b`` between ``a`` and ``b`` (both per image).

    ``pair_dims``: how many leading dimensions of ``relevance`` index the pairs (1 for
    [P, ...], 2 for [B, K, ...]); the ``chefer`` rescaling sums over the others. ``inv``:
    ``safe_inverse(a + b)`` when the caller has it.
    """
    _check_variant(variant)
    if inv is None:
        inv = safe_inverse(a + b)
    rel_a, rel_b = relevance * take(a * inv, idx), relevance * take(b * inv, idx)
    if variant == "original":
        return rel_a, rel_b
    dims = tuple(range(pair_dims, relevance.dim()))
    shape = relevance.shape[:pair_dims] + (1,) * (relevance.dim() - pair_dims)
    sum_a, sum_b = rel_a.sum(dims), rel_b.sum(dims)
    total = relevance.sum(dims)
    norm = sum_a.abs() + sum_b.abs()
    fact_a = safe_divide(sum_a.abs(), norm) * total
    fact_b = safe_divide(sum_b.abs(), norm) * total
    rel_a.mul_(safe_divide(fact_a, sum_a).reshape(shape))
    rel_b.mul_(safe_divide(fact_b, sum_b).reshape(shape))
    return rel_a, rel_b


def clone_relprop(
    rel_1: Tensor, rel_2: Tensor, x: Tensor, idx: Tensor | None, inv: Tensor | None = None
) -> Tensor:
    """Merge the relevances of the two uses of ``x`` (the residual branch point):
    ``x * (R_1 / x + R_2 / x)`` with the stabilised division (``inv``: ``safe_inverse(x)``
    when the caller has it)."""
    inv = safe_inverse(x) if inv is None else inv
    return torch.add(rel_1, rel_2).mul_(take(x * inv, idx))


def matmul_relprop(
    relevance: Tensor, a: Tensor, b: Tensor, idx: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Relevance of both factors of ``a @ b`` (batched matrices): ``x * grad(z) . R / z``."""
    a_p, b_p = take(a, idx), take(b, idx)
    s = relevance * take(safe_inverse(a @ b), idx)
    return (s @ b_p.transpose(-2, -1)).mul_(a_p), (a_p.transpose(-2, -1) @ s).mul_(b_p)


def select_relprop(relevance: Tensor, x: Tensor, idx: Tensor | None) -> Tensor:
    """Relevance of the selected entries ``x`` (the CLS-token pooling): ``x * R / x``."""
    return relevance * take(x * safe_inverse(x), idx)


def conv_input_relprop(
    relevance: Tensor,
    x: Tensor,
    weight: Tensor,
    idx: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> Tensor:
    """z^B rule of the first convolution (pixels bounded by the image's min and max).

    ``relevance`` [P, out, h, w], ``x`` [B, C, H, W] -> relevance of the pixels [P, C, H, W].
    The bounds ``low``/``high`` are the smallest and largest value of each image over all
    channels and pixels; the bias takes no relevance (as the reference).
    """
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    low = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
    high = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)

    def conv(inp: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(inp, w, stride=stride, padding=padding, dilation=dilation)

    def conv_t(s: Tensor, w: Tensor) -> Tensor:
        size = (s.shape[0],) + tuple(x.shape[1:])
        return torch.nn.grad.conv2d_input(size, w, s, stride, padding, dilation)

    z = conv(x, weight) - conv(low, w_pos) - conv(high, w_neg) + EPS
    s = relevance / take(z, idx)
    return (
        take(x, idx) * conv_t(s, weight)
        - take(low, idx) * conv_t(s, w_pos)
        - take(high, idx) * conv_t(s, w_neg)
    )
