"""What every relevance method is computed from: the forward pass of a timm
VisionTransformer recorded block by block, the (image, class) pairs of a batch, the
attention gradients of the class logits and the explicit relevance backward.

The forward pass (``forward_trace``) is the model's own, with attention computed explicitly
(so timm's ``fused_attn`` does not matter); its logits equal ``model(images)``. It is shared
by all classes of an image; the per-class work is batched over (image, class) pairs, laid
out [images, classes, ...] so that what was recorded per image broadcasts over its classes
without copies: one batched backward over all one-hot seeds for the attention gradients
(``attention_gradients``, walked block by block from the top so that one block's
gradients are held at a time), and the relevance propagated for all pairs at once
(``relevance_backward``, with the rules of ``wsss_core.cams.lrp``; the denominators of the
linear rules come from the recorded outputs, and the walk stops where nothing below is
read). Every pair gets what the reference gives for that image and class alone, up to
rounding.

The work per (image, class), in forward passes of the blocks walked: the reference
(``ViT_LRP``, one pair at a time) runs a forward (1), a backward with parameter gradients
(2) and a relevance pass whose linear rule takes 8 products per layer (both of its terms,
each a forward and a gradient of ``x+ W+`` and ``x- W-``), about 11; here a map costs the
batched gradient (1, no parameter gradients) and the relevance rule's two products per
layer (``s W`` and ``s |W|``, 2), plus the shared forward and denominators (1.5 per image).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from timm.layers import HybridEmbed, PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from wsss_core.cams.lrp import (
    add_relprop,
    clone_relprop,
    linear_relprop,
    safe_inverse,
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
    qkv: Tensor  # qkv output [B, N, 3 * heads * d]
    q: Tensor  # [B, heads, N, d] after q_norm, before the 1/sqrt(d) scale
    k: Tensor  # [B, heads, N, d] after k_norm
    v: Tensor  # [B, heads, N, d]
    attn: Tensor  # attention probabilities [B, heads, N, N]
    ctx: Tensor  # proj input [B, N, heads*d]
    p_out: Tensor  # proj output
    a_out: Tensor  # attention branch output (ls1(p_out), the residual addend)
    x_mid: Tensor  # x + a_out
    h2: Tensor  # norm2 output = fc1 input
    f1: Tensor  # fc1 output (before the activation)
    hidden: Tensor  # fc2 input
    f2: Tensor  # fc2 output
    m_out: Tensor  # MLP branch output (ls2(f2), the residual addend)
    out: Tensor  # x_mid + m_out


@dataclass
class ForwardTrace:
    """The whole forward pass of a batch of images."""

    image: Tensor  # input of the patch-embedding convolution [B, 3, H', W'] (padded if so)
    image_size: tuple[int, int]  # (H, W) of the images given
    grid: tuple[int, int]  # token grid (h, w)
    prefix: int  # tokens before the patch tokens: the CLS token, then the register tokens
    tokens: Tensor  # prefix tokens + patch tokens before the position embedding [B, N, D]
    pos: Tensor  # what the position embedding added [B, N, D] (0 where none was)
    blocks: list[BlockTrace]
    final: Tensor  # output of the final norm [B, N, D]
    head_in: Tensor  # head input (fc_norm of the CLS token) [B, D]
    logits: Tensor  # [B, num_classes]


def _block_forward(blk: Block, x: Tensor) -> BlockTrace:
    attn_mod, mlp = blk.attn, blk.mlp
    batch, n, _ = x.shape
    heads, head_dim = attn_mod.num_heads, attn_mod.head_dim
    h1 = blk.norm1(x)
    qkv = attn_mod.qkv(h1)
    q, k, v = qkv.reshape(batch, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    attn = ((q * attn_mod.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    ctx = attn_mod.norm((attn @ v).transpose(1, 2).reshape(batch, n, heads * head_dim))
    p_out = attn_mod.proj(ctx)
    a_out = blk.ls1(p_out)
    x_mid = x + a_out
    h2 = blk.norm2(x_mid)
    f1 = mlp.fc1(h2)
    hidden = mlp.norm(mlp.act(f1))
    f2 = mlp.fc2(hidden)
    m_out = blk.ls2(f2)
    return BlockTrace(
        x, h1, qkv, q, k, v, attn, ctx, p_out, a_out, x_mid, h2, f1, hidden, f2, m_out,
        x_mid + m_out,
    )  # fmt: skip


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
        embedded = model._pos_embed(emb)  # prefix tokens, then patches (+ position embedding)
        prefix = [t for t in (model.cls_token, model.reg_token) if t is not None]
        tokens = torch.cat([t.expand(batch, -1, -1) for t in prefix] + [patches], dim=1)
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
    return ForwardTrace(
        conv_input, size, grid, model.num_prefix_tokens, tokens, pos, blocks, final, head_in,
        logits,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# Pairs, gradients and the relevance backward


@dataclass
class Pairs:
    """The (image, class) pairs of a batch, in image order then class-list order.

    The per-pair computations lay the pairs out as [B, K, ...] (K = ``width``, the most
    classes of an image; slot j of image b is its j-th class), so that per-image tensors
    [B, 1, ...] broadcast against them without a copy per class. Slots beyond an image's
    count hold a zero seed (zero relevance, zero gradient) and are dropped by ``select``;
    ``explain`` groups images by their number of classes, so that it has none.
    """

    image: Tensor  # int64 [P]: image of each pair
    cls: Tensor  # int64 [P]: class of each pair
    slot: Tensor  # int64 [P]: position of the class in its image's list
    counts: list[int]  # classes per image

    @property
    def width(self) -> int:
        """K: the slots per image of the [B, K, ...] layout."""
        return max(self.counts, default=0)

    def seeds(self, num_classes: int, like: Tensor) -> Tensor:
        """One-hot class seeds [B, K, num_classes] (zero rows in empty slots)."""
        seeds = like.new_zeros(len(self.counts), self.width, num_classes)
        seeds[self.image, self.slot, self.cls] = 1
        return seeds

    def select(self, x: Tensor) -> Tensor:
        """[B, K, ...] -> [P, ...]: the pairs' entries, in pair order."""
        flat = x.flatten(0, 1)
        if all(c == self.width for c in self.counts):
            return flat
        return flat.index_select(0, self.image * self.width + self.slot)


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
) -> Iterator[tuple[int, Tensor]]:
    """d logit[class] / d attention probabilities of the blocks ``block_ids``, per pair
    [B, K, heads, N, N], yielded block by block from the top (the order of the relevance
    walk), so that only one block's gradients are held at a time.

    One backward pass over a batch of one-hot seeds (seed j holds the j-th class of every
    image; ``is_grads_batched``), walked in pieces: logits -> last block's output, then
    each block's output -> its attention probabilities and its input.
    """
    if not block_ids:
        return
    seeds = pairs.seeds(trace.logits.shape[1], trace.logits).transpose(0, 1)  # [K, B, C]
    # under float16 autocast the gradients are scaled up on the way (as a loss scaler
    # does) so that they do not underflow, and scaled back in float32
    scale = 2.0**12 if trace.logits.dtype == torch.float16 else 1.0
    seeds = seeds * scale
    batched = seeds.shape[0] > 1

    def grad(outputs: Tensor, inputs: list[Tensor], grad_outputs: Tensor) -> tuple:
        return torch.autograd.grad(
            outputs, inputs, grad_outputs if batched else grad_outputs[0],
            is_grads_batched=batched,
        )  # fmt: skip

    def per_pair(g: Tensor) -> Tensor:
        g = g.transpose(0, 1) if batched else g.unsqueeze(1)
        return g if scale == 1.0 else g.float() / scale

    wanted, lowest = set(block_ids), min(block_ids)
    (g_out,) = grad(trace.logits, [trace.blocks[-1].out], seeds)
    if not batched:
        g_out = g_out.unsqueeze(0)
    for i in range(len(trace.blocks) - 1, lowest - 1, -1):
        t = trace.blocks[i]
        inputs = [t.attn] if i == lowest else [t.attn, t.x]
        grads = grad(t.out, inputs, g_out)
        if i > lowest:
            g_out = grads[1] if batched else grads[1].unsqueeze(0)
        if i in wanted:
            yield i, per_pair(grads[0])


def _cast_block(t: BlockTrace, dtype: torch.dtype) -> BlockTrace:
    """The block's tensors in ``dtype`` (a forward pass under autocast recorded some in a
    lower precision; the relevance walk runs in the model's own)."""
    if all(getattr(t, f.name).dtype == dtype for f in fields(BlockTrace)):
        return t
    return BlockTrace(**{f.name: getattr(t, f.name).to(dtype) for f in fields(BlockTrace)})


def _per_image(x: Tensor) -> Tensor:
    """A per-image tensor [B, ...] as [B, 1, ...], to broadcast over the K slots."""
    return x.unsqueeze(1)


def _bias_free(y: Tensor, linear: nn.Linear) -> Tensor:
    """``x W^T`` from a linear layer's output ``y = x W^T + b``."""
    return y if linear.bias is None else y - linear.bias


def _block_relprop(
    relevance: Tensor,
    blk: Block,
    t: BlockTrace,
    variant: str,
    need_input: bool,
    inv_out: Tensor,
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """Relevance backward through one block -> (relevance of its input, attention relevance,
    ``safe_inverse`` of its input).

    ``relevance`` [B, K, T, D] holds the relevance of the first T tokens of the block
    output; the other tokens have none (T = 1 in the last block, where only the CLS token
    is relevant). Token-wise layers then only touch those T tokens: zeros stay zeros under
    every rule, so this is exact. ``inv_out`` is ``safe_inverse`` of those T output tokens
    (the block above computed it as its input's). The attention relevance
    [B, K, heads, T, N] is that of rows 0..T-1 of the attention probabilities (the others
    have none) after the split at ``attn @ v`` (halved, as the reference saves it).
    Without ``need_input`` the walk stops there. Layer scale (``ls1``, ``ls2``), like the
    normalisations and the activation, passes relevance unchanged; the linear rules take
    their denominators from the forward pass's outputs, and the residual additions and
    branch points share their inverses.
    """
    attn_mod, mlp = blk.attn, blk.mlp
    # outputs recorded in a lower precision (autocast) are no denominators: x W^T then
    # differs from the recorded output by more than the denominator may be small
    exact = t.x.dtype == relevance.dtype
    t = _cast_block(t, relevance.dtype)
    batch, width, rows, _ = relevance.shape
    n = t.x.shape[1]
    heads, head_dim = attn_mod.num_heads, attn_mod.head_dim
    first = slice(0, rows)

    def img(x: Tensor) -> Tensor:
        return _per_image(x[:, first])

    def linear(r: Tensor, x: Tensor, layer: nn.Linear, y: Tensor) -> Tensor:
        out = img(_bias_free(y, layer)) if exact else None
        return linear_relprop(r, img(x), layer.weight, None, variant, out)

    inv_mid = safe_inverse(t.x_mid[:, first])
    # MLP half: out = x_mid + m_out, x_mid branches into the residual and norm2
    r_mid, r_mlp = add_relprop(
        relevance, img(t.x_mid), img(t.m_out), None, variant, 2, _per_image(inv_out)
    )
    r_mlp = linear(r_mlp, t.hidden, mlp.fc2, t.f2)
    r_mlp = linear(r_mlp, t.h2, mlp.fc1, t.f1)
    relevance = clone_relprop(r_mid, r_mlp, img(t.x_mid), None, _per_image(inv_mid))
    del r_mid, r_mlp

    # attention half: x_mid = x + a_out
    r_x, r_branch = add_relprop(
        relevance, img(t.x), img(t.a_out), None, variant, 2, _per_image(inv_mid)
    )
    r_ctx = linear(r_branch, t.ctx, attn_mod.proj, t.p_out)
    r_ctx = r_ctx.reshape(batch, width, rows, heads, head_dim).transpose(2, 3)
    # ctx = attn @ v per head; both shares halved, as the reference does
    attn_rows, v = t.attn[:, :, first], t.v  # [B, heads, T, N], [B, heads, N, d]
    s = r_ctx * _per_image(safe_inverse(attn_rows @ v).mul_(0.5))  # [B, K, heads, T, d]
    r_attn = (s @ _per_image(v.transpose(-2, -1))).mul_(_per_image(attn_rows))
    if not need_input:
        return None, r_attn, None
    # r_v = v * (attn^T @ s), the K classes side by side as columns (attn is not copied)
    s_cols = s.permute(0, 2, 3, 1, 4).reshape(batch, heads, rows, width * head_dim)
    r_v = (attn_rows.transpose(-2, -1) @ s_cols).view(batch, heads, n, width, head_dim)
    r_v.mul_(v.unsqueeze(3))  # [B, heads, N, K, d]
    del s, s_cols
    # attn = softmax(q k^T scale): relevance passes the softmax; both shares halved
    q_rows, k = t.q[:, :, first], t.k
    s = r_attn * _per_image(safe_inverse(q_rows @ k.transpose(-2, -1)).mul_(0.5))
    r_q = (s @ _per_image(k)).mul_(_per_image(q_rows))  # [B, K, heads, T, d]
    r_k = (s.transpose(-2, -1) @ _per_image(q_rows)).mul_(_per_image(k))  # [B, K, heads, N, d]
    del s
    # relevance of the qkv output [B, K, N, 3, heads, d]; rows >= T of q have none
    shape = (batch, width, n, 3, heads, head_dim)
    r_qkv = relevance.new_zeros(shape) if rows < n else relevance.new_empty(shape)
    r_qkv[:, :, first, 0] = r_q.transpose(2, 3)
    r_qkv[:, :, :, 1] = r_k.transpose(2, 3)
    r_qkv[:, :, :, 2] = r_v.permute(0, 3, 2, 1, 4)
    del r_q, r_k, r_v
    r_qkv = r_qkv.reshape(batch, width, n, 3 * heads * head_dim)
    out = _per_image(_bias_free(t.qkv, attn_mod.qkv)) if exact else None
    r_h1 = linear_relprop(r_qkv, _per_image(t.h1), attn_mod.qkv.weight, None, variant, out)
    del r_qkv
    # clone_relprop(r_x, r_h1, x) in place; r_x holds relevance in the first T tokens only
    inv_x = safe_inverse(t.x)
    r_h1[:, :, first] += r_x
    return r_h1.mul_(_per_image(t.x * inv_x)), r_attn, inv_x


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

    Pairs are laid out [B, K, ...] (``Pairs``). ``visit(i, attn_relevance)`` is called for
    each block from the last one down, with the relevance [B, K, heads, T, N] of rows
    0..T-1 of its attention probabilities (T = 1 in the last block: only the CLS row has
    relevance there; T = N below). With ``need_input`` the relevance of block
    ``down_to``'s input [B, K, N, D] is returned; otherwise the walk stops at block
    ``down_to``'s attention relevance, since nothing below it is read.

    The head reads the CLS token through ``fc_norm`` and the final ``norm`` (relevance
    passes both unchanged, as the reference's LayerNorm).

    The walk runs in the model's dtype with autocast off: a forward pass recorded under
    autocast is taken in full precision here (relevance, a sum of 1 over every token and
    channel, would underflow in float16, and the rules' ratios lose too much in bfloat16).
    """
    head = model.head
    dtype = head.weight.dtype
    with torch.no_grad(), torch.autocast(head.weight.device.type, enabled=False):
        seed = pairs.seeds(trace.logits.shape[1], head.weight)  # [B, K, C]
        exact = trace.logits.dtype == dtype  # else see _block_relprop
        out = _per_image(_bias_free(trace.logits, head)) if exact else None
        head_in = _per_image(trace.head_in.to(dtype))
        r_head = linear_relprop(seed, head_in, head.weight, None, variant, out)
        final_cls = _per_image(trace.final[:, 0].to(dtype))
        relevance = select_relprop(r_head, final_cls, None).unsqueeze(2)
        inv_out = safe_inverse(trace.blocks[-1].out[:, :1].to(dtype))
        for i in range(len(model.blocks) - 1, down_to - 1, -1):
            below = i > down_to or need_input
            relevance, r_attn, inv_out = _block_relprop(
                relevance, model.blocks[i], trace.blocks[i], variant, below, inv_out
            )
            if visit is not None:
                visit(i, r_attn)
    return relevance if need_input else None
