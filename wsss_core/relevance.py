"""Class-specific relevance maps of a timm VisionTransformer (Chefer, Gur & Wolf, CVPR 2021).

``explain(model, images, classes, method)`` walks a stock timm ``VisionTransformer`` (plain
patch embedding or a ``HybridEmbed`` CNN stem) with its own forward pass that records
what every layer saw (attention computed explicitly, so timm's ``fused_attn`` does not
matter), then runs an explicit relevance backward (``wsss_core.lrp``). The model is left
untouched: no module is replaced, no parameter or buffer changes, and its train/eval
flags are restored afterwards (the computation itself always runs in eval mode).

The forward pass is shared by all classes of an image; the per-class work is batched over
(image, class) pairs: one batched backward over all one-hot seeds for the attention
gradients, and the relevance propagated for all pairs at once. Every pair gets exactly
what the reference gives for that image and class alone (the reference's batch-wide
normalisation of additions is made per pair).

Methods and their equivalents in hila-chefer/Transformer-Explainability (the paper's
evaluation, ``baselines/ViT/imagenet_seg_eval.py``, uses ``start_layer=1``):

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
=========================  ============================================================

All LRP methods start from the one-hot vector of the class on the logits (not the logit
value) and use the ``layers_ours`` rules by default (``variant="chefer"``);
``variant="original"`` selects the ``layers_lrp`` rules with which the paper's evaluation
computed its ``full_lrp`` and ``lrp_last_layer`` baselines (``ViT_orig_LRP``).

Every result is the raw, un-normalised relevance of the patch tokens as [K, h, w] on the
token grid, except ``full_lrp`` on a plain patch embedding, which reaches the pixels:
[K, H, W]. For a hybrid (CNN stem) ``full_lrp`` stops at the stem's output grid, i.e. the
token grid (relevance of the patch tokens after the position-embedding split, summed over
embedding channels). Layer scale, register tokens, pooling other than the CLS token and
gated or GLU blocks are rejected; other normalisation layers (pre-norm, fc-norm, qk-norm)
pass relevance through like LayerNorm does in the reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from timm.layers import HybridEmbed, Mlp, PatchEmbed
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from wsss_core.lrp import (
    add_relprop,
    clone_relprop,
    conv_input_relprop,
    linear_relprop,
    matmul_relprop,
    select_relprop,
    take,
)

METHODS = (
    "transformer_attribution",
    "rollout",
    "attn_last_layer",
    "attn_gradcam",
    "lrp_last_layer",
    "full_lrp",
)
_NEEDS_GRADIENTS = ("transformer_attribution", "attn_gradcam")
_CLASS_AGNOSTIC = ("rollout", "attn_last_layer")


# --------------------------------------------------------------------------------------
# Model checks and geometry


def check_supported(model: nn.Module) -> None:
    """Raise ValueError unless ``model`` is a ViT layout the relevance backward knows."""
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"relevance maps need a timm VisionTransformer, got {type(model)}")
    problems = []
    if model.cls_token is None or model.global_pool != "token" or model.attn_pool is not None:
        problems.append("the prediction must come from the CLS token (global_pool='token')")
    if model.num_reg_tokens or model.no_embed_class or model.pos_embed is None:
        problems.append("register tokens, no_embed_class or a missing position embedding")
    if not isinstance(model.head, nn.Linear):
        problems.append("the head must be one Linear layer")
    if not isinstance(model.patch_embed, PatchEmbed | HybridEmbed):
        problems.append(f"unknown patch embedding {type(model.patch_embed).__name__}")
    elif isinstance(model.patch_embed, PatchEmbed) and not isinstance(
        model.patch_embed.proj, nn.Conv2d
    ):
        problems.append("the patch embedding must be a Conv2d")
    for i, blk in enumerate(model.blocks):
        attn, mlp = getattr(blk, "attn", None), getattr(blk, "mlp", None)
        if type(blk) is not Block or type(attn) is not Attention or type(mlp) is not Mlp:
            problems.append(f"block {i} is not a pre-norm timm Block with Attention and Mlp")
        elif not (isinstance(blk.ls1, nn.Identity) and isinstance(blk.ls2, nn.Identity)):
            problems.append(f"block {i} has layer scale")
        elif attn.gate is not None or not isinstance(mlp.fc1, nn.Linear):
            problems.append(f"block {i} has a gated attention or a convolutional MLP")
        if problems:
            break
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        problems.append(f"parameters must be float32 or float64, not {dtype}")
    if problems:
        raise ValueError("model not supported by the relevance methods: " + "; ".join(problems))


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


def output_grid(
    model: VisionTransformer, image_size: tuple[int, int], method: str
) -> tuple[int, int]:
    """The (h, w) of ``method``'s maps for an input of ``image_size``."""
    if method == "full_lrp" and not is_hybrid(model):
        return int(image_size[0]), int(image_size[1])
    return token_grid(model, image_size)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode, then restore every module's own train flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


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


# --------------------------------------------------------------------------------------
# The methods, each returning per-pair (or per-image) maps over the patch tokens [.., L]


def _cls_row_rollout(matrices_top_down: Sequence[Tensor]) -> Tensor:
    """CLS row of ``A_top @ ... @ A_bottom`` for [B, N, N] matrices given top block first."""
    row = matrices_top_down[0][:, 0, :]
    for matrix in matrices_top_down[1:]:
        row = (row.unsqueeze(1) @ matrix).squeeze(1)
    return row


def _transformer_attribution(model, trace, pairs, start_layer, variant) -> Tensor:
    depth = len(model.blocks)
    grads = attention_gradients(trace, range(start_layer, depth), pairs)
    state: dict[str, Tensor] = {}

    def visit(i: int, r_attn: Tensor) -> None:
        weights = (grads.pop(i) * r_attn).clamp(min=0).mean(dim=1)  # [P, N, N]
        if "row" not in state:  # CLS row of (E + I) for the last block
            row = weights[:, 0, :].clone()
            row[:, 0] += 1
        else:  # row @ (E + I)
            row = state["row"] + (state["row"].unsqueeze(1) @ weights).squeeze(1)
        state["row"] = row

    with torch.no_grad():
        relevance_backward(model, trace, pairs, start_layer, variant, visit)
    return state["row"][:, 1:]


def _rollout(model, trace, start_layer) -> Tensor:
    matrices = []
    for t in reversed(trace.blocks[start_layer:]):
        heads_mean = t.attn.sum(dim=1) / t.attn.shape[1]
        eye = torch.eye(heads_mean.shape[-1], dtype=heads_mean.dtype, device=heads_mean.device)
        augmented = heads_mean + eye
        matrices.append(augmented / augmented.sum(dim=-1, keepdim=True))
    return _cls_row_rollout(matrices)[:, 1:]


def _attn_last_layer(trace) -> Tensor:
    return trace.blocks[-1].attn.clamp(min=0).mean(dim=1)[:, 0, 1:]


def _attn_gradcam(model, trace, pairs) -> Tensor:
    last = len(model.blocks) - 1
    grad = attention_gradients(trace, [last], pairs)[last][:, :, 0, 1:]  # [P, heads, L]
    cam = take(trace.blocks[-1].attn, pairs.image)[:, :, 0, 1:]
    weights = grad.mean(dim=-1, keepdim=True)
    return (cam * weights).mean(dim=1).clamp(min=0)


def _lrp_last_layer(model, trace, pairs, variant) -> Tensor:
    cams: list[Tensor] = []
    with torch.no_grad():
        last = len(model.blocks) - 1
        relevance_backward(model, trace, pairs, last, variant, lambda i, r: cams.append(r))
    return cams[0].clamp(min=0).mean(dim=1)[:, 0, 1:]


def _full_lrp(model, trace, pairs, variant) -> Tensor:
    """Relevance of the pixels [P, H, W] (plain) or of the stem's tokens [P, h, w] (hybrid)."""
    with torch.no_grad():
        relevance = relevance_backward(model, trace, pairs, 0, variant, need_input=True)
        r_tokens, _ = add_relprop(relevance, trace.tokens, trace.pos, pairs.image, variant)
        r_patches = r_tokens[:, 1:]
        h, w = trace.grid
        if is_hybrid(model):
            return r_patches.sum(dim=-1).reshape(-1, h, w)
        proj = model.patch_embed.proj
        r_grid = r_patches.reshape(-1, h, w, r_patches.shape[-1]).permute(0, 3, 1, 2)
        r_pixels = conv_input_relprop(
            r_grid, trace.image, proj.weight, pairs.image, proj.stride, proj.padding, proj.dilation
        )
        height, width = trace.image_size
        return r_pixels.sum(dim=1)[:, :height, :width]


# --------------------------------------------------------------------------------------
# Public entry point


def explain(
    model: VisionTransformer,
    images: Tensor,
    classes: Sequence[Sequence[int]],
    method: str = "transformer_attribution",
    start_layer: int = 1,
    *,
    variant: str = "chefer",
) -> list[Tensor]:
    """Relevance maps of ``classes[b]`` for every image ``images[b]``.

    ``images``: normalised float [B, 3, H, W]; ``classes``: one list of class indices per
    image. Returns, per image, a tensor [K_b, h, w] (K_b = len(classes[b])) of raw,
    un-normalised relevance on the token grid, or on the pixel grid [K_b, H, W] for
    ``full_lrp`` with a plain patch embedding. ``start_layer`` (first block included)
    matters for ``transformer_attribution`` and ``rollout``; ``variant`` picks the LRP
    rules (``"chefer"``: layers_ours, ``"original"``: layers_lrp; see ``wsss_core.lrp``).
    Computation runs in the model's dtype (float32 or float64) on its device; the maps
    are detached tensors there.
    """
    if method not in METHODS:
        raise ValueError(f"unknown relevance method '{method}'; choose one of {METHODS}")
    check_supported(model)
    depth = len(model.blocks)
    if not 0 <= start_layer < depth:
        raise ValueError(f"start_layer must be in [0, {depth}) for this model, got {start_layer}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if len(classes) != images.shape[0]:
        raise ValueError(f"{len(classes)} class lists for {images.shape[0]} images")
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype)
    pairs = make_pairs(classes, model.num_classes, param.device)
    grid = output_grid(model, tuple(images.shape[-2:]), method)
    if sum(pairs.counts) == 0:  # no image has a class to explain
        return [images.new_zeros((0,) + grid) for _ in classes]

    with _eval_mode(model):
        if method in _CLASS_AGNOSTIC:
            with torch.no_grad():
                trace = forward_trace(model, images)
                per_image = (
                    _rollout(model, trace, start_layer)
                    if method == "rollout"
                    else _attn_last_layer(trace)
                )
            maps = take(per_image, pairs.image)
        else:
            grad_from = None
            if method == "transformer_attribution":
                grad_from = start_layer
            elif method == "attn_gradcam":
                grad_from = depth - 1
            trace = forward_trace(model, images, grad_from)
            if method == "transformer_attribution":
                maps = _transformer_attribution(model, trace, pairs, start_layer, variant)
            elif method == "attn_gradcam":
                maps = _attn_gradcam(model, trace, pairs)
            elif method == "lrp_last_layer":
                maps = _lrp_last_layer(model, trace, pairs, variant)
            else:
                maps = _full_lrp(model, trace, pairs, variant)
    maps = maps.detach().reshape((maps.shape[0],) + grid)
    return list(maps.split(pairs.counts, dim=0))
