"""More of timm's ViT family: layer scale, register tokens, no_embed_class, pre-norm, fc-norm,
QuickGELU. Invariants that need no reference: folding the layer scale into the weights,
register tokens as extra patch tokens, conservation through every block; and tiny configs
of the timm families (DeiT-3, DINOv2 with and without registers, CLIP, EVA with a CLS
head) walked by every method."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from test_relevance import images, randomise
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from wsss_core.cams.methods import METHODS
from wsss_core.cams.relevance import explain, output_grid
from wsss_core.cams.support import check_supported
from wsss_core.cams.trace import forward_trace, make_pairs, relevance_backward

F64 = torch.float64
TINY = {"patch_size": 4, "embed_dim": 8, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
TINY = {**TINY, "num_classes": 4}
CLASSES = [[2, 0], [1, 3]]


def close_maps(got: list[torch.Tensor], expected: list[torch.Tensor], tol: float) -> None:
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        for k in range(e.shape[0]):
            scale = e[k].abs().max().item()
            torch.testing.assert_close(g[k], e[k], rtol=0, atol=tol * scale)


# --------------------------------------------------------------------------------------
# Layer scale = the scale folded into attn.proj and mlp.fc2


def layer_scale_model(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=16, init_values=1.0, **TINY).double()
    randomise(model, seed)
    with torch.no_grad():  # positive scales, far from 1
        for blk in model.blocks:
            blk.ls1.gamma.uniform_(0.2, 3.0)
            blk.ls2.gamma.uniform_(0.2, 3.0)
    return model.eval()


def folded(model: VisionTransformer) -> VisionTransformer:
    """The same function without layer scale: gamma folded into the rows of proj and fc2."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for blk in out.blocks:
            for ls, linear in ((blk.ls1, blk.attn.proj), (blk.ls2, blk.mlp.fc2)):
                linear.weight.mul_(ls.gamma[:, None])
                linear.bias.mul_(ls.gamma)
            blk.ls1, blk.ls2 = nn.Identity(), nn.Identity()
    return out


@pytest.mark.parametrize("variant", ["chefer", "original"])
@pytest.mark.parametrize("method", METHODS)
def test_layer_scale_equals_the_scale_folded_into_the_weights(method, variant):
    """A positive elementwise scale passes relevance unchanged, and the linear rules give
    the folded layer the same relevance (``z`` and each contribution scale alike), so the
    maps agree map for map; the only difference is the rules' stabiliser 1e-9, which the
    fold scales too."""
    model = layer_scale_model()
    plain = folded(model)
    x = images(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-12, atol=1e-12)
    got = explain(model, x, CLASSES, method, variant=variant)
    expected = explain(plain, x, CLASSES, method, variant=variant)
    close_maps(got, expected, 1e-6)


# --------------------------------------------------------------------------------------
# Register tokens = extra patch tokens of a model without registers


def register_pair(seed: int = 0) -> tuple[VisionTransformer, VisionTransformer]:
    """A model with 4 registers on a 4 x 4 grid (16 px), and the same weights without
    registers on a 5 x 4 grid (20 x 16 px) whose last row of patch tokens equals the
    registers: its pixels are 0, the patch-embedding bias is 0, and its position
    embedding there is the register tokens. Attention has no notion of order, so the
    two walk the same tokens in another order."""
    torch.manual_seed(seed)
    common = {**TINY, "no_embed_class": True}
    with_regs = VisionTransformer(img_size=16, reg_tokens=4, **common).double()
    randomise(with_regs, seed)
    with torch.no_grad():
        with_regs.patch_embed.proj.bias.zero_()
    plain = VisionTransformer(img_size=(20, 16), **common).double()
    state = {k: v for k, v in with_regs.state_dict().items() if k not in ("reg_token",)}
    state["pos_embed"] = torch.cat([with_regs.pos_embed, with_regs.reg_token], dim=1)
    plain.load_state_dict(state)
    return with_regs.eval(), plain.eval()


# attn_gradcam averages the gradient over the patch columns, which differ (the plain
# model's include the register row)
REGISTER_METHODS = [m for m in METHODS if m != "attn_gradcam"]


@pytest.mark.parametrize("method", REGISTER_METHODS)
def test_register_tokens_are_kept_through_the_rollout_and_left_out_of_the_map(method):
    with_regs, plain = register_pair()
    x = images(2, 16)
    padded = torch.cat([x, x.new_zeros(2, 3, 4, 16)], dim=2)  # one more row of patches
    with torch.no_grad():
        torch.testing.assert_close(with_regs(x), plain(padded), rtol=1e-12, atol=1e-12)
    # full_lrp splits at the position embedding, where a register is a token here and a
    # position embedding there: the original rule splits each token alone
    variants = ["original"] if method == "full_lrp" else ["chefer", "original"]
    for variant in variants:
        got = explain(with_regs, x, CLASSES, method, variant=variant)
        expected = explain(plain, padded, CLASSES, method, variant=variant)
        assert got[0].shape[-2:] == output_grid(with_regs, (16, 16), method)
        close_maps(got, [e[:, : g.shape[1]] for g, e in zip(got, expected, strict=True)], 1e-9)


# --------------------------------------------------------------------------------------
# Conservation through every block


EVERYTHING = {
    "init_values": 0.5,
    "reg_tokens": 2,
    "no_embed_class": True,
    "pre_norm": True,
    "fc_norm": True,
    "act_layer": "quick_gelu",
}


def test_chefer_rules_conserve_relevance_through_every_block():
    """Each block's input holds the seed's relevance (1) under the layers_ours rules, with
    layer scale, registers, a pre-norm, an fc-norm and QuickGELU all in one model. (32
    wide, so that no linear output has all its positive contributions zero.)"""
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=16, **{**TINY, "embed_dim": 32, "depth": 3}, **EVERYTHING
    ).double()
    randomise(model, 0).eval()
    check_supported(model)
    trace = forward_trace(model, images(2, 16))
    pairs = make_pairs(CLASSES, model.num_classes, "cpu")
    for block in range(3):
        rel = relevance_backward(model, trace, pairs, block, "chefer", need_input=True)
        sums = pairs.select(rel).sum(dim=(1, 2))
        torch.testing.assert_close(sums, torch.ones(4, dtype=F64), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------
# Tiny configs of timm's families

SMALL = {"depth": 2, "embed_dim": 32, "num_heads": 2, "num_classes": 4}
FAMILIES = {  # name: (extra kwargs, image side)
    "deit3_small_patch16_224": ({"img_size": 32}, 32),
    "vit_small_patch14_dinov2": ({"img_size": 28}, 28),
    "vit_small_patch14_reg4_dinov2": ({"img_size": 28}, 28),
    "vit_base_patch16_clip_224": ({"img_size": 32}, 32),
    "vit_base_patch16_clip_quickgelu_224": ({"img_size": 32}, 32),
    # EVA pools by average with an fc-norm; the classifier builds it with a CLS head
    "eva_large_patch14_196": ({"img_size": 28, "global_pool": "token", "fc_norm": True}, 28),
}


def family_model(name: str) -> VisionTransformer:
    torch.manual_seed(0)
    kwargs, _ = FAMILIES[name]
    return timm.create_model(name, pretrained=False, **SMALL, **kwargs).double().eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_timm_families_are_walked_by_every_method(name):
    model = family_model(name)
    check_supported(model)
    side = FAMILIES[name][1]
    x = images(2, side)
    with torch.no_grad():
        torch.testing.assert_close(forward_trace(model, x).logits, model(x), rtol=1e-10, atol=1e-12)
    for method in METHODS:
        maps = explain(model, x, [[0, 3], [1]], method)
        grid = output_grid(model, (side, side), method)
        assert [tuple(m.shape) for m in maps] == [(2, *grid), (1, *grid)]
        assert all(torch.isfinite(m).all() for m in maps)
        alone = explain(model, x[1:], [[1]], method)[0]
        torch.testing.assert_close(maps[1], alone, rtol=1e-9, atol=1e-12)
