"""Relevance maps (wsss_core.cams.relevance) and the LRP rules (wsss_core.cams.lrp): values on
tiny models."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from timm.layers import HybridEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from wsss_core.cams.lrp import (
    add_relprop,
    clone_relprop,
    conv_input_relprop,
    linear_relprop,
    matmul_relprop,
    safe_divide,
)
from wsss_core.cams.methods import METHODS
from wsss_core.cams.relevance import explain, output_grid
from wsss_core.cams.trace import forward_trace, make_pairs, relevance_backward, total_stride

torch.set_num_threads(1)
F64 = torch.float64


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Weights larger than timm's init, so that relevance is far from degenerate."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5 if p.dim() > 1 else 0.2)
    return model


def plain_vit(
    depth: int = 2, dynamic: bool = False, seed: int = 0, embed_dim: int = 8, **kwargs
) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=16,
        patch_size=4,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=4,
        dynamic_img_size=dynamic,
        **kwargs,
    )
    return randomise(model.double(), seed).eval()


def hybrid_vit(seed: int = 0, embed_dim: int = 8) -> VisionTransformer:
    """A CNN stem of stride 4 (with BatchNorm) and a 2x2 projection: total stride 8."""
    torch.manual_seed(seed)
    stem = nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    model = VisionTransformer(
        img_size=32,
        patch_size=2,
        embed_dim=embed_dim,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=3,
        embed_layer=partial(HybridEmbed, backbone=stem),
        dynamic_img_size=True,
    ).double()
    randomise(model, seed)
    with torch.no_grad():
        stem[1].running_var.uniform_(0.5, 2.0)
        stem[1].running_mean.normal_()
    return model.eval()


def images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --------------------------------------------------------------------------------------
# LRP rules on hand-made values


def test_safe_divide_values():
    a = torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=F64)
    b = torch.tensor([2.0, 0.0, -1e-9, -4.0], dtype=F64)
    got = safe_divide(a, b)
    assert got[0] == pytest.approx(1 / (2 + 1e-9), rel=1e-15)
    assert got[1] == 0.0  # zero denominator: no relevance
    assert got[2] == pytest.approx(1e9)  # b + eps == 0 is replaced by eps
    assert got[3] == pytest.approx(3 / (-4 + 1e-9), rel=1e-15)


def test_linear_rule_is_gradient_times_input_for_positive_layers():
    """x >= 0, W >= 0, relevance = output: R_in = x * d(sum y)/dx (LRP-0 = grad x input)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 6, generator=gen, dtype=F64) + 0.1
    w = torch.rand(4, 6, generator=gen, dtype=F64)
    y = x @ w.T
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((xg @ w.T).sum(), xg)
    for variant in ("chefer", "original"):
        got = linear_relprop(y, x, w, None, variant)
        torch.testing.assert_close(got, x * grad, rtol=1e-8, atol=0)


def test_linear_rule_hand_example_and_variants():
    """x = (1, -1), w = (1, -1): both terms contribute 1. chefer splits R=1 in halves, the
    original rule normalises each term by itself and hands out 2 (the reference's
    layers_lrp behaviour)."""
    x = torch.tensor([[1.0, -1.0]], dtype=F64)
    w = torch.tensor([[1.0, -1.0]], dtype=F64)
    r = torch.tensor([[1.0]], dtype=F64)
    chefer = linear_relprop(r, x, w, None, "chefer")
    original = linear_relprop(r, x, w, None, "original")
    torch.testing.assert_close(chefer, torch.tensor([[0.5, 0.5]], dtype=F64), rtol=1e-8, atol=0)
    torch.testing.assert_close(original, torch.tensor([[1.0, 1.0]], dtype=F64), rtol=1e-8, atol=0)


def test_linear_rule_conserves_and_shares_denominators_per_image():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 7, 5, generator=gen, dtype=F64)
    w = torch.randn(3, 5, generator=gen, dtype=F64)
    r = torch.randn(3, 7, 3, generator=gen, dtype=F64)
    idx = torch.tensor([1, 0, 1])
    got = linear_relprop(r, x, w, idx)
    torch.testing.assert_close(got.sum(dim=(1, 2)), r.sum(dim=(1, 2)), rtol=1e-6, atol=0)
    for p in range(3):
        alone = linear_relprop(r[p : p + 1], x[idx[p] : idx[p] + 1], w, None)
        torch.testing.assert_close(got[p : p + 1], alone, rtol=1e-12, atol=1e-15)


def test_add_rule_hand_example():
    """a=(1,3), b=(1,-1), R=(2,4): raw parts (1,6) and (1,-2) are rescaled so that they
    share sum(R)=6 by their absolute sums 7:1 -> (0.75, 4.5) and (-0.75, 1.5)."""
    a = torch.tensor([[1.0, 3.0]], dtype=F64)
    b = torch.tensor([[1.0, -1.0]], dtype=F64)
    r = torch.tensor([[2.0, 4.0]], dtype=F64)
    ra, rb = add_relprop(r, a, b, None, "chefer")
    torch.testing.assert_close(ra, torch.tensor([[0.75, 4.5]], dtype=F64), rtol=1e-8, atol=0)
    torch.testing.assert_close(rb, torch.tensor([[-0.75, 1.5]], dtype=F64), rtol=1e-8, atol=0)
    ra, rb = add_relprop(r, a, b, None, "original")
    torch.testing.assert_close(ra, torch.tensor([[1.0, 6.0]], dtype=F64), rtol=1e-8, atol=0)
    torch.testing.assert_close(rb, torch.tensor([[1.0, -2.0]], dtype=F64), rtol=1e-8, atol=0)


def test_add_rule_normalises_each_pair_alone():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(2, 5, 4, generator=gen, dtype=F64)
    b = torch.randn(2, 5, 4, generator=gen, dtype=F64)
    r = torch.randn(3, 5, 4, generator=gen, dtype=F64)
    idx = torch.tensor([0, 0, 1])
    ra, rb = add_relprop(r, a, b, idx)
    torch.testing.assert_close((ra + rb).sum(dim=(1, 2)), r.sum(dim=(1, 2)), rtol=1e-8, atol=0)
    for p in range(3):
        ra1, rb1 = add_relprop(r[p : p + 1], a[idx[p] : idx[p] + 1], b[idx[p] : idx[p] + 1], None)
        torch.testing.assert_close(ra[p : p + 1], ra1, rtol=1e-13, atol=0)
        torch.testing.assert_close(rb[p : p + 1], rb1, rtol=1e-13, atol=0)


def test_matmul_rule_hand_example_and_conservation():
    """z = a @ b with a = [[1, 2]], b = [[3], [1]]: z = 5, R = 10 -> a gets (3, 2)*2 = (6, 4),
    b gets (3, 2)^T * 2; each factor receives all of R."""
    a = torch.tensor([[[1.0, 2.0]]], dtype=F64)
    b = torch.tensor([[[3.0], [1.0]]], dtype=F64)
    r = torch.tensor([[[10.0]]], dtype=F64)
    ra, rb = matmul_relprop(r, a, b, None)
    torch.testing.assert_close(ra, torch.tensor([[[6.0, 4.0]]], dtype=F64), rtol=1e-8, atol=0)
    torch.testing.assert_close(rb, torch.tensor([[[6.0], [4.0]]], dtype=F64), rtol=1e-8, atol=0)
    gen = torch.Generator().manual_seed(4)
    a = torch.rand(2, 3, 4, 5, generator=gen, dtype=F64)
    b = torch.randn(2, 3, 5, 2, generator=gen, dtype=F64)
    r = torch.randn(2, 3, 4, 2, generator=gen, dtype=F64)
    ra, rb = matmul_relprop(r, a, b, None)
    torch.testing.assert_close(ra.sum(dim=(2, 3)), r.sum(dim=(2, 3)), rtol=1e-6, atol=0)
    torch.testing.assert_close(rb.sum(dim=(2, 3)), r.sum(dim=(2, 3)), rtol=1e-6, atol=0)


def test_clone_rule_adds_branches():
    x = torch.tensor([[2.0, 0.0, -1.0]], dtype=F64)
    r1 = torch.tensor([[1.0, 5.0, 2.0]], dtype=F64)
    r2 = torch.tensor([[3.0, 5.0, -1.0]], dtype=F64)
    got = clone_relprop(r1, r2, x, None)
    torch.testing.assert_close(got, torch.tensor([[4.0, 0.0, 1.0]], dtype=F64), rtol=1e-8, atol=0)


def test_input_conv_rule_hand_example_and_conservation():
    """One 1x2 patch, one filter w = (1, -1), pixels x = (2, -1), bounds l=-1, h=2:
    z = x.w - l.w+ - h.w- = 3 + 1 + 2 = 6; R = 6 -> (2 + 1, 1 + 2) = (3, 3)."""
    x = torch.tensor([2.0, -1.0], dtype=F64).reshape(1, 1, 1, 2).expand(1, 3, 1, 2).clone()
    x[:, 1:] = 0.5  # other channels inside the bounds, zero weight
    w = torch.zeros(1, 3, 1, 2, dtype=F64)
    w[0, 0] = torch.tensor([[1.0, -1.0]])
    r = torch.full((1, 1, 1, 1), 6.0, dtype=F64)
    got = conv_input_relprop(r, x, w, None, stride=(1, 2), padding=(0, 0))
    torch.testing.assert_close(got[0, 0], torch.tensor([[3.0, 3.0]], dtype=F64), rtol=1e-8, atol=0)
    assert got[0, 1:].abs().max() == 0
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=F64)
    w = torch.randn(5, 3, 4, 4, generator=gen, dtype=F64)
    r = torch.randn(3, 5, 2, 2, generator=gen, dtype=F64)
    got = conv_input_relprop(r, x, w, torch.tensor([0, 1, 1]), (4, 4), (0, 0))
    torch.testing.assert_close(got.sum(dim=(1, 2, 3)), r.sum(dim=(1, 2, 3)), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------
# The model walk


@pytest.mark.parametrize("make", [plain_vit, hybrid_vit])
def test_forward_trace_reproduces_the_model(make):
    model = make()
    x = images(2, 32 if make is hybrid_vit else 16)
    with torch.no_grad():
        torch.testing.assert_close(forward_trace(model, x).logits, model(x), rtol=1e-12, atol=1e-12)


def test_uniform_attention_closed_forms():
    """q = k = 0 makes every attention row uniform (1/N): the raw last-layer attention is
    1/N, the rollout of m blocks ((U + I)/2)^m has CLS row (1 - 2^-m)/N over the patches,
    and Grad-CAM of a constant attention map is constant."""
    model = plain_vit(depth=3)
    dim = model.embed_dim
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight[: 2 * dim] = 0
            blk.attn.qkv.bias[: 2 * dim] = 0
    x = images(2, 16)
    n = 1 + 16
    classes = [[0, 3], [1]]
    for maps in explain(model, x, classes, "attn_last_layer"):
        torch.testing.assert_close(maps, torch.full_like(maps, 1 / n), rtol=1e-12, atol=0)
    for start_layer, m in ((0, 3), (1, 2), (2, 1)):
        for maps in explain(model, x, classes, "rollout", start_layer):
            expected = torch.full_like(maps, (1 - 2.0**-m) / n)
            torch.testing.assert_close(maps, expected, rtol=1e-12, atol=0)
    for maps in explain(model, x, classes, "attn_gradcam"):
        for k in range(maps.shape[0]):
            assert torch.allclose(maps[k], maps[k, 0, 0].expand_as(maps[k]), rtol=1e-12, atol=0)


def gae_reference(model: VisionTransformer, image: torch.Tensor, cls: int, start_layer: int):
    """Port of Transformer-MM-Explainability's ViT ``generate_relevance`` for one image and
    one class: timm's own forward with explicit attention, each block's attention map and its
    gradient saved by hooks (as ``register_hook=True`` does there), then R = I and, block by
    block from ``start_layer`` up, R += mean_h (grad * attention)+ @ R; CLS row, patches."""
    saved: list[dict[str, torch.Tensor]] = []

    def save(_module, _inputs, attn):
        entry = {"attn": attn.detach()}
        attn.register_hook(lambda grad: entry.update(grad=grad.detach()))
        saved.append(entry)

    handles = [blk.attn.attn_drop.register_forward_hook(save) for blk in model.blocks]
    fused = [blk.attn.fused_attn for blk in model.blocks]
    for blk in model.blocks:
        blk.attn.fused_attn = False
    try:
        output = model(image.unsqueeze(0))
        one_hot = torch.zeros_like(output)
        one_hot[0, cls] = 1
        (one_hot * output).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        for blk, flag in zip(model.blocks, fused, strict=True):
            blk.attn.fused_attn = flag
        model.zero_grad(set_to_none=True)
    n = saved[0]["attn"].shape[-1]
    r = torch.eye(n, dtype=saved[0]["attn"].dtype)
    for entry in saved[start_layer:]:
        cam = (entry["grad"][0] * entry["attn"][0]).clamp(min=0).mean(dim=0)  # avg_heads
        r += cam @ r  # apply_self_attention_rules
    grid = model.patch_embed.grid_size
    return r[0, 1:].reshape(grid)


@pytest.mark.parametrize("start_layer", [0, 1, 2])
def test_gae_matches_the_reference_port(start_layer):
    model = plain_vit(depth=3)
    x = images(2, 16)
    classes = [[2, 0], [1, 3]]
    maps = explain(model, x, classes, "gae", start_layer)
    for b, class_list in enumerate(classes):
        for j, c in enumerate(class_list):
            expected = gae_reference(model, x[b], c, start_layer)
            scale = expected.abs().max().item()
            assert scale > 0  # not a degenerate case
            torch.testing.assert_close(maps[b][j], expected, rtol=0, atol=1e-6 * scale)


def test_gae_of_one_block_is_its_positive_head_mean_cls_row():
    """With one block R = I + E and the identity's CLS row is 0 over the patches, so the map is
    E[0, 1:] = mean_h (A_h[0, j] g_h[0, j])+. Only the CLS row of the attention reaches the
    logit, through ctx_h[0] = sum_j A_h[0, j] v_h[j]: g_h[0, j] = v_h[j] . d logit / d ctx_h[0]."""
    model = plain_vit(depth=1)
    x = images(2, 16)
    classes = [[0, 2], [3]]
    maps = explain(model, x, classes, "gae", 0)
    trace = forward_trace(model, x, grad_from=0)
    t = trace.blocks[0]
    heads, head_dim = t.v.shape[1], t.v.shape[-1]
    nonzero = 0
    for b, class_list in enumerate(classes):
        for j, c in enumerate(class_list):
            (d_ctx,) = torch.autograd.grad(trace.logits[b, c], t.ctx, retain_graph=True)
            d_ctx = d_ctx[b, 0].reshape(heads, head_dim, 1)
            grad = (t.v[b] @ d_ctx).squeeze(-1)  # [heads, N]
            expected = (t.attn[b, :, 0] * grad).clamp(min=0).mean(dim=0)[1:].detach()
            nonzero += int(expected.abs().max() > 0)  # a map may be all zero
            torch.testing.assert_close(maps[b][j].flatten(), expected, rtol=1e-12, atol=1e-15)
    assert nonzero >= 2  # not a degenerate case


def test_gae_from_beyond_the_last_block_is_the_identity_row():
    """No block rolled out leaves R = I, whose CLS row over the patches is zero (the reference
    loop with no block); ``explain`` itself only takes start_layer < depth."""
    model = plain_vit(depth=2)
    x = images(2, 16)
    assert gae_reference(model, x[0], 1, start_layer=2).abs().max() == 0
    gae = METHODS["gae"]
    trace = forward_trace(model, x, gae.gradients_from(2, 2))
    pairs = make_pairs([[0, 1], [3]], model.num_classes, "cpu")
    got = gae.compute(model, trace, pairs, 2, "chefer")
    assert torch.equal(got, torch.zeros(3, 16, dtype=F64))
    with pytest.raises(ValueError, match="start_layer"):
        explain(model, x, [[0], [1]], "gae", start_layer=2)


@pytest.mark.parametrize("variant", ["chefer", "original"])
@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_each_pair_alone(method, variant):
    model = plain_vit()
    x = images(3, 16)
    classes = [[2, 0], [], [1, 3, 0]]
    maps = explain(model, x, classes, method, variant=variant)
    grid = output_grid(model, (16, 16), method)
    assert [tuple(m.shape) for m in maps] == [(2, *grid), (0, *grid), (3, *grid)]
    for b, class_list in enumerate(classes):
        for j, c in enumerate(class_list):
            alone = explain(model, x[b : b + 1], [[c]], method, variant=variant)[0][0]
            torch.testing.assert_close(maps[b][j], alone, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_hybrid_all_methods(method):
    model = hybrid_vit()
    x = images(2, 32)
    classes = [[0, 2], [1]]
    maps = explain(model, x, classes, method)
    assert total_stride(model) == (8, 8)
    assert [tuple(m.shape) for m in maps] == [(2, 4, 4), (1, 4, 4)]  # token grid, also full_lrp
    assert all(torch.isfinite(m).all() for m in maps)
    for b, class_list in enumerate(classes):
        for j, c in enumerate(class_list):
            alone = explain(model, x[b : b + 1], [[c]], method)[0][0]
            torch.testing.assert_close(maps[b][j], alone, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("make,size", [(plain_vit, 16), (hybrid_vit, 32)])
def test_chefer_rules_conserve_relevance_down_to_the_tokens(make, size):
    """Every layers_ours rule conserves relevance: the block-0 input holds the seed's 1.

    (A linear output whose positive contributions are all zero, z = 0, drops its relevance;
    with 32 inputs per output that has probability 2^-32, so the models here are 32 wide.)
    """
    model = make(embed_dim=32)
    trace = forward_trace(model, images(2, size))
    pairs = make_pairs([[0, 1], [2]], model.num_classes, "cpu")
    with torch.no_grad():
        rel = pairs.select(relevance_backward(model, trace, pairs, 0, "chefer", need_input=True))
    torch.testing.assert_close(rel.sum(dim=(1, 2)), torch.ones(3, dtype=F64), rtol=1e-6, atol=0)


def test_full_lrp_reaches_the_pixels_of_a_plain_vit():
    model = plain_vit()
    x = images(2, 16)
    classes = [[0, 1], [3]]
    maps = explain(model, x, classes, "full_lrp")
    assert [tuple(m.shape) for m in maps] == [(2, 16, 16), (1, 16, 16)]
    # the pixels hold what the patch tokens got at the position-embedding split
    trace = forward_trace(model, x)
    pairs = make_pairs(classes, model.num_classes, "cpu")
    with torch.no_grad():
        rel = pairs.select(relevance_backward(model, trace, pairs, 0, "chefer", need_input=True))
        r_tokens, _ = add_relprop(rel, trace.tokens, trace.pos, pairs.image)
    pixel_sums = torch.cat([m.sum(dim=(1, 2)) for m in maps])
    torch.testing.assert_close(pixel_sums, r_tokens[:, 1:].sum(dim=(1, 2)), rtol=1e-6, atol=0)


def test_model_left_untouched_and_run_in_eval_mode():
    model = hybrid_vit()
    model.pos_drop.p = 0.5  # timm's _pos_embed applies it: it would change results in train mode
    x = images(2, 32)
    expected = explain(model, x, [[0], [1, 2]], "transformer_attribution")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.blocks[1].eval()  # a mixed state must come back as it was
    flags = {name: m.training for name, m in model.named_modules()}
    for method in METHODS:
        explain(model, x, [[0], [1, 2]], method)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert flags == {name: m.training for name, m in model.named_modules()}
    got = explain(model, x, [[0], [1, 2]], "transformer_attribution")
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_float32_model_computes_in_float32_close_to_float64():
    model = plain_vit()
    x = images(1, 16)
    ref = explain(model, x, [[1]], "transformer_attribution")[0]
    got = explain(model.float(), x.float(), [[1]], "transformer_attribution")[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-3 * ref.abs().max().item())


def test_dynamic_size_model_explains_other_sizes():
    model = plain_vit(dynamic=True)
    maps = explain(model, images(1, 24), [[0]], "transformer_attribution")
    assert maps[0].shape == (1, 6, 6)
    with pytest.raises(ValueError, match="dynamic_img_size"):
        explain(plain_vit(dynamic=False), images(1, 24), [[0]], "rollout")


def test_bad_inputs_raise():
    model = plain_vit()
    x = images(1, 16)
    with pytest.raises(ValueError, match="unknown relevance method"):
        explain(model, x, [[0]], "gradcam")
    with pytest.raises(ValueError, match="start_layer"):
        explain(model, x, [[0]], start_layer=2)
    with pytest.raises(ValueError, match="class index 4"):
        explain(model, x, [[4]])
    with pytest.raises(ValueError, match="class lists"):
        explain(model, x, [[0], [1]])
    with pytest.raises(ValueError, match="qk-norm"):
        explain(plain_vit(qk_norm=True), x, [[0]])
    with pytest.raises(ValueError, match="unknown LRP variant"):
        explain(model, x, [[0]], "full_lrp", variant="zplus")


def test_images_without_classes_give_empty_maps():
    model = plain_vit()
    maps = explain(model, images(2, 16), [[], []], "full_lrp")
    assert [tuple(m.shape) for m in maps] == [(0, 16, 16), (0, 16, 16)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_the_forward_low_and_the_maps_in_the_model_dtype(dtype):
    """Under autocast the forward pass and the gradients run in the low precision (float16
    gradients scaled against underflow), the relevance walk in the model's float32: every
    map is finite float32, and the maps of the methods that need no LRP stay near fp32's."""
    model = plain_vit().float()
    x = images(2, 16).float()
    classes = [[0, 2], [1]]
    for method in METHODS:
        expected = explain(model, x, classes, method)
        with torch.autocast("cpu", dtype=dtype):
            got = explain(model, x, classes, method)
        for g, e in zip(got, expected, strict=True):
            assert g.dtype == torch.float32 and torch.isfinite(g).all()
            if method in ("rollout", "attn_last_layer", "gae"):
                scale = e.abs().max().item()
                torch.testing.assert_close(g, e, rtol=0, atol=0.05 * scale)
