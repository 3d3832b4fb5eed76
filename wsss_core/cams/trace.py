"""What every relevance method is computed from: the forward pass of a timm
VisionTransformer recorded block by block, the (image, class) pairs of a batch, the
attention gradients of the class logits and the explicit relevance backward.

The forward pass (``forward_trace``) is the model's own, with attention computed explicitly
(so timm's ``fused_attn`` does not matter); its logits equal ``model(images)``. It is shared
by all classes of an image; the per-class work is batched over (image, class) pairs: one
batched backward over all one-hot seeds for the attention gradients
(``attention_gradients``), and the relevance propagated for all pairs at once
(``relevance_backward``, with the rules of ``wsss_core.cams.lrp``). Every pair gets exactly
what the reference gives for that image and class alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from timm.layers import HybridEmbed, PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor

from wsss_core.cams.lrp import (
    add_relprop,
    clone_relprop,
    linear_relprop,
    matmul_relprop,
    select_relprop,
)

# --------------------------------------------------------------------------------------
# Geometry


def is_hybrid(model: VisionTransformer) -> bool:
    """Whether the tokens come from a CNN stem (timm ``HybridEmbed``)."""
    return isinstance(model.patch_embed, HybridEmbed)


def total_stride(model: VisionTransformer) -> tuple[int, int]:
    """Pixels per token along (height, width): patch size, times the stem's stride for hybrids."""
    ratio = model.patch_embed.feat_ratio(as_scalar=False)
    return int(ratio[0]), int(ratio[1])


def token_grid(model: VisionTransformer, image_size: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of patch tokens for an input of ``image_size`` (H, W)."""
    h, w = model.patch_embed.dynamic_feat_size(tuple(image_size))
    return int(h), int(w)


# --------------------------------------------------------------------------------------
# Forward pass that records what the relevance backward needs


@dataclass
class BlockTrace:
    """Tensors one block saw, per image (leading dimension B)."""

    x: Tensor  # block input [B, N, D]
    h1: Tensor  # norm1 output = qkv input
    q: Tensor  # [B, heads, N, d] after q_norm, before the 1/sqrt(d) scale
    k: Tensor  # [B, heads, N, d] after k_norm
    v: Tensor  # [B, heads, N, d]
    attn: Tensor  # attention probabilities [B, heads, N, N]
    ctx: Tensor  # proj input [B, N, heads*d]
    a_out: Tensor  # attention branch output (residual addend)
    x_mid: Tensor  # x + a_out
    h2: Tensor  # norm2 output = fc1 input
    hidden: Tensor  # fc2 input
    m_out: Tensor  # MLP branch output (residual addend)
    out: Tensor  # x_mid + m_out


@dataclass
class ForwardTrace:
    """The whole forward pass of a batch of images."""

    image: Tensor  # input of the patch-embedding convolution [B, 3, H', W'] (padded if so)
    image_size: tuple[int, int]  # (H, W) of the images given
    grid: tuple[int, int]  # token grid (h, w)
    tokens: Tensor  # class token + patch tokens before the position embedding [B, N, D]
    pos: Tensor  # what the position embedding added [B, N, D]
    blocks: list[BlockTrace]
    final: Tensor  # output of the final norm [B, N, D]
    head_in: Tensor  # head input [B, D]
    logits: Tensor  # [B, num_classes]


def _block_forward(blk: Block, x: Tensor) -> BlockTrace:
    attn_mod, mlp = blk.attn, blk.mlp
    batch, n, _ = x.shape
    heads, head_dim = attn_mod.num_heads, attn_mod.head_dim
    h1 = blk.norm1(x)
    qkv = attn_mod.qkv(h1).reshape(batch, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    attn = ((q * attn_mod.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    ctx = attn_mod.norm((attn @ v).transpose(1, 2).reshape(batch, n, heads * head_dim))
    a_out = attn_mod.proj(ctx)
    x_mid = x + a_out
    h2 = blk.norm2(x_mid)
    hidden = mlp.norm(mlp.act(mlp.fc1(h2)))
    m_out = mlp.fc2(hidden)
    return BlockTrace(x, h1, q, k, v, attn, ctx, a_out, x_mid, h2, hidden, m_out, x_mid + m_out)


def forward_trace(
    model: VisionTransformer, images: Tensor, grad_from: int | None = None
) -> ForwardTrace:
    """Forward ``images`` (model in eval mode), recording every block's tensors.

    With ``grad_from`` = i, blocks i.. and the head are recorded with autograd so that
    gradients w.r.t. their attention probabilities can be taken; the rest without.
    The logits equal ``model(images)``.
    """
    pe = model.patch_embed
    size = tuple(images.shape[-2:])
    if not model.dynamic_img_size and size != tuple(pe.img_size):
        raise ValueError(
            f"input size {size} differs from the model's {tuple(pe.img_size)} and the model "
            "was built without dynamic_img_size=True (needed for other sizes and scales)"
        )
    with torch.no_grad():
        emb = pe(images)
        if emb.dim() == 4:  # NHWC (dynamic image size)
            grid = (emb.shape[1], emb.shape[2])
        else:
            grid = token_grid(model, size)
        batch, dim = emb.shape[0], emb.shape[-1]
        patches = emb.reshape(batch, -1, dim)
        if patches.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"patch embedding gave {patches.shape[1]} tokens for grid {grid}")
        embedded = model._pos_embed(emb)
        tokens = torch.cat([model.cls_token.expand(batch, -1, -1), patches], dim=1)
        pos = embedded - tokens
        x = model.norm_pre(model.patch_drop(embedded))
    conv_input = images
    if isinstance(pe, PatchEmbed) and pe.dynamic_img_pad:
        pad_h = (pe.patch_size[0] - size[0] % pe.patch_size[0]) % pe.patch_size[0]
        pad_w = (pe.patch_size[1] - size[1] % pe.patch_size[1]) % pe.patch_size[1]
        conv_input = torch.nn.functional.pad(images, (0, pad_w, 0, pad_h))

    blocks = []
    for i, blk in enumerate(model.blocks):
        record = grad_from is not None and i >= grad_from
        if record and i == grad_from:
            x = x.detach().requires_grad_(True)
        with torch.set_grad_enabled(record):
            trace = _block_forward(blk, x)
        blocks.append(trace)
        x = trace.out
    with torch.set_grad_enabled(grad_from is not None):
        final = model.norm(x)
        head_in = model.fc_norm(final[:, 0])
        logits = model.head(model.head_drop(head_in))
    return ForwardTrace(conv_input, size, grid, tokens, pos, blocks, final, head_in, logits)


# --------------------------------------------------------------------------------------
# Pairs, gradients and the relevance backward


@dataclass
class Pairs:
    """The (image, class) pairs of a batch, in image order then class-list order."""

    image: Tensor  # int64 [P]: image of each pair
    cls: Tensor  # int64 [P]: class of each pair
    slot: Tensor  # int64 [P]: position of the class in its image's list
    counts: list[int]  # classes per image


def make_pairs(classes: Sequence[Sequence[int]], num_classes: int, device) -> Pairs:
    """Flatten per-image class lists into pairs, checking every index."""
    image, cls, slot = [], [], []
    for b, class_list in enumerate(classes):
        for j, c in enumerate(class_list):
            c = int(c)
            if not 0 <= c < num_classes:
                raise ValueError(f"class index {c} of image {b} is outside [0, {num_classes})")
            image.append(b)
            cls.append(c)
            slot.append(j)

    def as_tensor(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    counts = [len(class_list) for class_list in classes]
    return Pairs(as_tensor(image), as_tensor(cls), as_tensor(slot), counts)


def attention_gradients(
    trace: ForwardTrace, block_ids: Sequence[int], pairs: Pairs
) -> dict[int, Tensor]:
    """d logit[class] / d attention probabilities of each block, per pair [P, heads, N, N].

    One backward pass over a batch of one-hot seeds (seed j holds the j-th class of every
    image), so the graph is walked once for all classes.
    """
    batch, num_classes = trace.logits.shape
    slots = max(pairs.counts)
    seeds = trace.logits.new_zeros(slots, batch, num_classes)
    seeds[pairs.slot, pairs.image, pairs.cls] = 1
    inputs = [trace.blocks[i].attn for i in block_ids]
    if slots == 1:
        grads = torch.autograd.grad(trace.logits, inputs, grad_outputs=seeds[0])
        grads = [g.unsqueeze(0) for g in grads]
    else:
        grads = torch.autograd.grad(trace.logits, inputs, grad_outputs=seeds, is_grads_batched=True)
    return {i: g[pairs.slot, pairs.image] for i, g in zip(block_ids, grads, strict=True)}


def _block_relprop(
    relevance: Tensor,
    blk: Block,
    t: BlockTrace,
    idx: Tensor,
    variant: str,
    need_input: bool,
) -> tuple[Tensor | None, Tensor]:
    """Relevance backward through one block -> (relevance of its input, attention relevance).

    ``relevance`` [P, T, D] holds the relevance of the first T tokens of the block output;
    the other tokens have none (T = 1 in the last block, where only the CLS token is
    relevant). Token-wise layers then only touch those T tokens: zeros stay zeros under
    every rule, so this is exact. The attention relevance [P, heads, N, N] is that of the
    attention probabilities after the split at ``attn @ v`` (halved, as the reference
    saves it). Without ``need_input`` the walk stops there.
    """
    attn_mod, mlp = blk.attn, blk.mlp
    pairs, rows = relevance.shape[0], relevance.shape[1]
    n = t.x.shape[1]
    heads, head_dim = attn_mod.num_heads, attn_mod.head_dim
    first = slice(0, rows)
    r_mid, r_mlp = add_relprop(relevance, t.x_mid[:, first], t.m_out[:, first], idx, variant)
    r_mlp = linear_relprop(r_mlp, t.hidden[:, first], mlp.fc2.weight, idx, variant)
    r_mlp = linear_relprop(r_mlp, t.h2[:, first], mlp.fc1.weight, idx, variant)
    relevance = clone_relprop(r_mid, r_mlp, t.x_mid[:, first], idx)

    r_x, r_branch = add_relprop(relevance, t.x[:, first], t.a_out[:, first], idx, variant)
    r_ctx = linear_relprop(r_branch, t.ctx[:, first], attn_mod.proj.weight, idx, variant)
    r_ctx = r_ctx.reshape(pairs, rows, heads, head_dim).transpose(1, 2)
    r_attn_rows, r_v = matmul_relprop(r_ctx, t.attn[:, :, first], t.v, idx)
    r_attn_rows, r_v = r_attn_rows / 2, r_v / 2
    r_attn = _pad_rows(r_attn_rows, n, dim=2)
    if not need_input:
        return None, r_attn
    r_q, r_kt = matmul_relprop(r_attn_rows, t.q[:, :, first], t.k.transpose(-2, -1), idx)
    r_q, r_k = _pad_rows(r_q / 2, n, dim=2), r_kt.transpose(-2, -1) / 2
    r_qkv = torch.stack([r_q, r_k, r_v], dim=2)  # [P, heads, 3, N, d]
    r_qkv = r_qkv.permute(0, 3, 2, 1, 4).reshape(pairs, n, 3 * heads * head_dim)
    r_h1 = linear_relprop(r_qkv, t.h1, attn_mod.qkv.weight, idx, variant)
    return clone_relprop(_pad_rows(r_x, n, dim=1), r_h1, t.x, idx), r_attn


def _pad_rows(x: Tensor, size: int, dim: int) -> Tensor:
    """Extend ``x`` with zeros along ``dim`` to ``size`` entries."""
    if x.shape[dim] == size:
        return x
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def relevance_backward(
    model: VisionTransformer,
    trace: ForwardTrace,
    pairs: Pairs,
    down_to: int,
    variant: str = "chefer",
    visit: Callable[[int, Tensor], None] | None = None,
    need_input: bool = False,
) -> Tensor | None:
    """LRP from the one-hot class seeds down through blocks L-1 .. ``down_to``.

    ``visit(i, attn_relevance)`` is called for each block from the last one down. With
    ``need_input`` the relevance of block ``down_to``'s input [P, N, D] is returned.
    """
    idx = pairs.image
    num_classes = trace.logits.shape[1]
    seed = torch.nn.functional.one_hot(pairs.cls, num_classes).to(trace.logits.dtype)
    r_head = linear_relprop(seed, trace.head_in, model.head.weight, idx, variant)
    relevance = select_relprop(r_head, trace.final[:, 0], idx).unsqueeze(1)  # CLS token only
    for i in range(len(model.blocks) - 1, down_to - 1, -1):
        below = i > down_to or need_input
        relevance, r_attn = _block_relprop(
            relevance, model.blocks[i], trace.blocks[i], idx, variant, below
        )
        if visit is not None:
            visit(i, r_attn)
    return relevance if need_input else None
