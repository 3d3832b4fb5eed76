"""The relevance methods and their registry ``METHODS``: name -> ``Method``.

Methods and their equivalents in hila-chefer/Transformer-Explainability (the paper's
evaluation, ``baselines/ViT/imagenet_seg_eval.py``, uses ``start_layer=1``), and for ``gae``
in its successor hila-chefer/Transformer-MM-Explainability:

=========================  ============================================================
method                     reference
=========================  ============================================================
transformer_attribution    ``LRP.generate_LRP(x, index, method="transformer_attribution",
                           start_layer=1)`` on ``ViT_LRP`` (``layers_ours``): per block
                           from ``start_layer`` on, mean over heads of (grad x LRP
                           relevance of the attention probabilities)+, plus the identity
                           (rows NOT renormalised: ``ViT_LRP.compute_rollout_attention``),
                           multiplied across blocks; CLS row over the patch tokens.
rollout                    ``Baselines.generate_rollout(x, start_layer=1)``: head-mean
                           attention plus identity, rows normalised
                           (``ViT_explanation_generator.compute_rollout_attention``),
                           multiplied across blocks from ``start_layer``; CLS row.
attn_last_layer            ``generate_LRP(x, index, method="last_layer_attn")``: last
                           block's attention probabilities, head mean, CLS row.
attn_gradcam               ``Baselines.generate_cam_attn(x, index)`` without its final
                           min-max scaling: last block's CLS-row attention times the
                           mean gradient of each head over the patch columns, head mean,
                           positive part.
lrp_last_layer             ``generate_LRP(x, index, method="last_layer")``: LRP relevance
                           of the last block's attention probabilities, positive part,
                           head mean, CLS row.
full_lrp                   ``generate_LRP(x, index, method="full")``: LRP through every
                           block, the position-embedding addition and the patch-embedding
                           convolution (z^B rule) to the pixels, summed over channels.
gae                        hila-chefer/Transformer-MM-Explainability (Chefer, Gur & Wolf,
                           ICCV 2021), ``Transformer_MM_explainability_ViT.ipynb``
                           ``generate_relevance(model, x, index)``: R = I, then per block
                           R += mean over heads of (grad x attention)+ @ R; CLS row over
                           the patch tokens. The reference takes every block
                           (``start_layer=0``); here the blocks from ``start_layer`` on.
=========================  ============================================================

Each method computes its maps from a recorded forward pass (``wsss_core.cams.trace``); its
registry entry says whether it needs the attention gradients of the class logit, whether it
is class-agnostic (one map per image, shared by its classes), whether it rolls out from
``start_layer`` and whether it reaches the pixels (``full_lrp`` on a plain patch embedding).
``explain`` (``wsss_core.cams.relevance``) runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from wsss_core.cams.lrp import add_relprop, conv_input_relprop
from wsss_core.cams.trace import (
    ForwardTrace,
    Pairs,
    attention_gradients,
    is_hybrid,
    relevance_backward,
)

# --------------------------------------------------------------------------------------
# The methods: per-pair (or, class-agnostic, per-image) maps over the patch tokens [.., L].
# Per-pair work is laid out [B, K, ...] (``Pairs``); ``pairs.select`` gives [P, ...]. Maps
# leave out the prefix tokens (CLS and registers), which every roll-out keeps.


def _dtype(model) -> torch.dtype:
    """The dtype the maps are computed in: the model's (also under autocast)."""
    return model.head.weight.dtype


def _cls_row_rollout(matrices_top_down: Sequence[Tensor]) -> Tensor:
    """CLS row of ``A_top @ ... @ A_bottom`` for [B, N, N] matrices given top block first."""
    row = matrices_top_down[0][:, 0, :]
    for matrix in matrices_top_down[1:]:
        row = (row.unsqueeze(1) @ matrix).squeeze(1)
    return row


def _transformer_attribution(model, trace, pairs, start_layer, variant) -> Tensor:
    """Per pair: CLS row of prod over blocks >= start_layer of (mean_h (grad x LRP)+ + I).

    Only the CLS row of the product is read, so it is rolled down from the last block as
    ``row <- row + row @ E_i`` (N^2 per block, not N^3); the last block's E is needed in
    its CLS row only, which is all the relevance walk gives there.
    """
    depth = len(model.blocks)
    grads = attention_gradients(trace, range(start_layer, depth), pairs)  # top block first
    state: dict[str, Tensor] = {}

    def visit(i: int, r_attn: Tensor) -> None:  # r_attn [B, K, heads, T, N]
        rows = r_attn.shape[-2]
        block, grad = next(grads)
        assert block == i
        grad = grad[..., :rows, :].to(r_attn.dtype)
        weights = grad.mul(r_attn).clamp_(min=0).mean(dim=2)
        if "row" not in state:  # CLS row of (E + I) for the last block
            row = weights[..., 0, :].clone()
            row[..., 0] += 1
        else:  # row @ (E + I)
            row = state["row"] + (state["row"].unsqueeze(-2) @ weights).squeeze(-2)
        state["row"] = row

    with torch.no_grad():
        relevance_backward(model, trace, pairs, start_layer, variant, visit)
    return pairs.select(state["row"][..., trace.prefix :])


def _rollout(model, trace, pairs, start_layer, variant) -> Tensor:
    """Per image: CLS row of the roll-out of row-normalised (head-mean attention + I)."""
    matrices = []
    for t in reversed(trace.blocks[start_layer:]):
        attn = t.attn.to(_dtype(model))
        heads_mean = attn.sum(dim=1) / attn.shape[1]
        eye = torch.eye(heads_mean.shape[-1], dtype=heads_mean.dtype, device=heads_mean.device)
        augmented = heads_mean + eye
        matrices.append(augmented / augmented.sum(dim=-1, keepdim=True))
    return _cls_row_rollout(matrices)[:, trace.prefix :]


def _attn_last_layer(model, trace, pairs, start_layer, variant) -> Tensor:
    """Per image: head-mean CLS row of the last block's attention."""
    attn = trace.blocks[-1].attn.to(_dtype(model))
    return attn.clamp(min=0).mean(dim=1)[:, 0, trace.prefix :]


def _attn_gradcam(model, trace, pairs, start_layer, variant) -> Tensor:
    """Per pair: last block's CLS-row attention weighted by each head's mean gradient (over
    the patch columns)."""
    last = len(model.blocks) - 1
    (_, grad), *_ = attention_gradients(trace, [last], pairs)
    grad = grad[..., 0, trace.prefix :].to(_dtype(model))
    cam = trace.blocks[-1].attn[:, None, :, 0, trace.prefix :].to(_dtype(model))  # [B,1,h,L]
    weights = grad.mean(dim=-1, keepdim=True)  # [B, K, heads, 1]
    return pairs.select((cam * weights).mean(dim=2).clamp(min=0))


def _lrp_last_layer(model, trace, pairs, start_layer, variant) -> Tensor:
    """Per pair: (LRP relevance of the last block's attention)+, head mean, CLS row."""
    cams: list[Tensor] = []
    with torch.no_grad():
        last = len(model.blocks) - 1
        relevance_backward(model, trace, pairs, last, variant, lambda i, r: cams.append(r))
    return pairs.select(cams[0].clamp(min=0).mean(dim=2)[..., 0, trace.prefix :])


def _full_lrp(model, trace, pairs, start_layer, variant) -> Tensor:
    """Relevance of the pixels [P, H, W] (plain) or of the stem's tokens [P, h, w] (hybrid).

    The block-0 input's relevance passes ``norm_pre`` unchanged (a LayerNorm) and is split
    between the tokens and the position embedding; the prefix tokens' share is dropped.
    """
    with torch.no_grad():
        relevance = relevance_backward(model, trace, pairs, 0, variant, need_input=True)
        dtype = _dtype(model)
        tokens, pos = trace.tokens.unsqueeze(1).to(dtype), trace.pos.unsqueeze(1).to(dtype)
        r_tokens, _ = add_relprop(relevance, tokens, pos, None, variant, pair_dims=2)
        r_patches = pairs.select(r_tokens[:, :, trace.prefix :])  # [P, L, D]
        h, w = trace.grid
        if is_hybrid(model):
            return r_patches.sum(dim=-1).reshape(-1, h, w)
        proj = model.patch_embed.proj
        r_grid = r_patches.reshape(-1, h, w, r_patches.shape[-1]).permute(0, 3, 1, 2)
        r_pixels = conv_input_relprop(
            r_grid,
            trace.image.to(dtype),
            proj.weight,
            pairs.image,
            proj.stride,
            proj.padding,
            proj.dilation,
        )
        height, width = trace.image_size
        return r_pixels.sum(dim=1)[:, :height, :width]


def _gae(model, trace, pairs, start_layer, variant) -> Tensor:
    """Per pair: CLS row of R, where R = I and then, block by block from ``start_layer`` up,
    R <- R + mean_h (grad x attention)+ @ R (the gradient-only rule of Chefer et al. 2021).

    The CLS row of the final R = (I + E_last) @ ... @ (I + E_start) is rolled down from
    the last block as ``row <- row + row @ E_i``: N^2 per block instead of N^3.
    """
    blocks = range(start_layer, len(model.blocks))
    n, dtype = trace.blocks[0].attn.shape[-1], _dtype(model)
    row = trace.logits.new_zeros(len(pairs.counts), pairs.width, n, dtype=dtype)
    row[..., 0] = 1  # CLS row of the identity
    for i, grad in attention_gradients(trace, blocks, pairs):  # top block first
        with torch.no_grad():
            attn = trace.blocks[i].attn.unsqueeze(1).to(dtype)
            weights = grad.to(dtype).mul(attn).clamp_(min=0).mean(dim=2)  # [B, K, N, N]
            row = row + (row.unsqueeze(-2) @ weights).squeeze(-2)
    return pairs.select(row[..., trace.prefix :])


# --------------------------------------------------------------------------------------
# The registry

Compute = Callable[[VisionTransformer, ForwardTrace, Pairs, int, str], Tensor]


@dataclass(frozen=True)
class Method:
    """A relevance method: ``compute(model, trace, pairs, start_layer, variant)`` gives its maps
    per pair [P, L] (per image [B, L] when ``class_agnostic``; [P, H, W] or [P, h, w] when
    ``reaches_pixels``)."""

    name: str
    needs_gradients: bool  # attention gradients of the class logit
    class_agnostic: bool  # one map per image, the same for every class
    uses_start_layer: bool  # rolled out over the blocks from start_layer (else fixed blocks)
    reaches_pixels: bool  # on a plain patch embedding the maps are on the pixel grid
    compute: Compute

    def gradients_from(self, start_layer: int, depth: int) -> int | None:
        """The first block recorded with autograd: ``start_layer`` for a roll-out, else the
        last block; None when the method takes no gradient."""
        if not self.needs_gradients:
            return None
        return start_layer if self.uses_start_layer else depth - 1


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("transformer_attribution", True, False, True, False, _transformer_attribution),
        Method("rollout", False, True, True, False, _rollout),
        Method("attn_last_layer", False, True, False, False, _attn_last_layer),
        Method("attn_gradcam", True, False, False, False, _attn_gradcam),
        Method("lrp_last_layer", False, False, False, False, _lrp_last_layer),
        Method("full_lrp", False, False, False, True, _full_lrp),
        Method("gae", True, False, True, False, _gae),
    )
}


def method_named(name: str) -> Method:
    """The registry entry of ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown relevance method '{name}'; choose one of {tuple(METHODS)}")
    return METHODS[name]
