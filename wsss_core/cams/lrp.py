"""Layer-wise relevance propagation rules of Chefer, Gur & Wolf (CVPR 2021), batched per pair.

Each rule maps the relevance ``R`` of a layer's output to its inputs, with the semantics of
the reference implementation (``modules/layers_ours.py`` of hila-chefer/
Transformer-Explainability, alpha=1/beta=0). The inputs a layer saw in the forward pass
are per *image* (leading dimension B); the relevances are per (image, class) *pair*
(leading dimension P), and ``idx`` (int64 [P]) names the image of every pair. What does
not depend on the relevance (the denominators ``z``) is computed once per image and
shared by all of its classes.

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


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """``a / b`` with the reference's stabiliser: ``a / (b + 1e-9)``, and 0 where ``b == 0``.

    (The reference writes the denominator as ``clamp(b, min=eps) + clamp(b, max=eps)``,
    which is ``b + eps`` for every ``b``; a denominator of exactly 0, i.e. ``b == -eps``,
    becomes ``eps``.)
    """
    den = b.clamp(min=EPS) + b.clamp(max=EPS)
    den = den + den.eq(0).to(den.dtype) * EPS
    return a / den * b.ne(0).to(b.dtype)


def take(x: Tensor, idx: Tensor | None) -> Tensor:
    """Rows of per-image tensor ``x`` for every pair (``idx`` None: already per pair)."""
    return x if idx is None else x.index_select(0, idx)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown LRP variant '{variant}'; choose one of {VARIANTS}")


def linear_relprop(
    relevance: Tensor, x: Tensor, weight: Tensor, idx: Tensor | None, variant: str = "chefer"
) -> Tensor:
    """alpha=1/beta=0 rule of ``y = x W^T + b`` (the bias takes no relevance).

    ``relevance`` [P, ..., out], ``x`` [B, ..., in] -> relevance of ``x`` [P, ..., in].
    """
    _check_variant(variant)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    z_pos, z_neg = F.linear(x_pos, w_pos), F.linear(x_neg, w_neg)
    if variant == "chefer":
        s = safe_divide(relevance, take(z_pos + z_neg, idx))
        s_pos = s_neg = s
    else:
        s_pos = safe_divide(relevance, take(z_pos, idx))
        s_neg = safe_divide(relevance, take(z_neg, idx))
    return take(x_pos, idx) * (s_pos @ w_pos) + take(x_neg, idx) * (s_neg @ w_neg)


def add_relprop(
    relevance: Tensor, a: Tensor, b: Tensor, idx: Tensor | None, variant: str = "chefer"
) -> tuple[Tensor, Tensor]:
    """Split the relevance of ``a + b`` between ``a`` and ``b`` (both [B, ...])."""
    _check_variant(variant)
    s = safe_divide(relevance, take(a + b, idx))
    rel_a, rel_b = take(a, idx) * s, take(b, idx) * s
    if variant == "original":
        return rel_a, rel_b
    dims = tuple(range(1, relevance.dim()))
    shape = (-1,) + (1,) * (relevance.dim() - 1)
    sum_a, sum_b = rel_a.sum(dims), rel_b.sum(dims)
    total = relevance.sum(dims)
    norm = sum_a.abs() + sum_b.abs()
    fact_a = safe_divide(sum_a.abs(), norm) * total
    fact_b = safe_divide(sum_b.abs(), norm) * total
    rel_a = rel_a * safe_divide(fact_a, sum_a).reshape(shape)
    rel_b = rel_b * safe_divide(fact_b, sum_b).reshape(shape)
    return rel_a, rel_b


def clone_relprop(rel_1: Tensor, rel_2: Tensor, x: Tensor, idx: Tensor | None) -> Tensor:
    """Merge the relevances of the two uses of ``x`` (the residual branch point)."""
    xs = take(x, idx)
    return xs * (safe_divide(rel_1, xs) + safe_divide(rel_2, xs))


def matmul_relprop(
    relevance: Tensor, a: Tensor, b: Tensor, idx: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Relevance of both factors of ``a @ b`` (batched matrices): ``x * grad(z) . R / z``."""
    a_p, b_p = take(a, idx), take(b, idx)
    s = safe_divide(relevance, take(a @ b, idx))
    return a_p * (s @ b_p.transpose(-2, -1)), b_p * (a_p.transpose(-2, -1) @ s)


def select_relprop(relevance: Tensor, x: Tensor, idx: Tensor | None) -> Tensor:
    """Relevance of the selected entries ``x`` (the CLS-token pooling): ``x * R / x``."""
    return take(x, idx) * safe_divide(relevance, take(x, idx))


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
