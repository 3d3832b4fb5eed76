"""The registry of relevance methods, the one model-support check, and the AffinityNet's taps
that leave no hook behind (wsss_core.cams.methods, wsss_core.cams.support,
wsss_core.classifier.levels.ViTLevels)."""

from __future__ import annotations

import pytest
import torch
from timm.layers import SwiGLU
from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer

from wsss_core.cams.methods import METHODS, method_named
from wsss_core.cams.relevance import explain
from wsss_core.cams.support import UnsupportedModelError, check_supported
from wsss_core.classifier.levels import ViTLevels
from wsss_core.classifier.model import build_classifier

TINY = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}


def test_registry_entries():
    assert list(METHODS) == [
        "transformer_attribution",
        "rollout",
        "attn_last_layer",
        "attn_gradcam",
        "lrp_last_layer",
        "full_lrp",
        "gae",
    ]
    for name, method in METHODS.items():
        assert method.name == name and callable(method.compute)
    assert {n for n, m in METHODS.items() if m.needs_gradients} == {
        "transformer_attribution",
        "attn_gradcam",
        "gae",
    }
    assert {n for n, m in METHODS.items() if m.class_agnostic} == {"rollout", "attn_last_layer"}
    assert METHODS["transformer_attribution"].gradients_from(1, 4) == 1
    assert METHODS["attn_gradcam"].gradients_from(1, 4) == 3
    assert METHODS["gae"].gradients_from(1, 4) == 1
    assert {n for n, m in METHODS.items() if m.uses_start_layer} == {
        "transformer_attribution",
        "rollout",
        "gae",
    }
    assert METHODS["full_lrp"].gradients_from(1, 4) is None
    with pytest.raises(ValueError, match="unknown relevance method 'nope'"):
        method_named("nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"qk_norm": True}, "qk-norm"),
        ({"scale_attn_norm": True}, "scale-norm"),
        ({"scale_mlp_norm": True}, "scale-norm"),
        ({"class_token": False, "global_pool": "avg"}, "no CLS token"),
        ({"global_pool": "avg"}, "global_pool='token'"),
        ({"class_token": False, "global_pool": "map"}, "no CLS token"),
        ({"mlp_layer": SwiGLU}, "pre-norm timm Block of Attention and Mlp"),
        ({"block_fn": ParallelScalingBlock}, "pre-norm timm Block of Attention and Mlp"),
    ],
)
def test_one_support_check_for_explain_and_classifier(kwargs, message):
    model = VisionTransformer(**TINY, **kwargs)
    with pytest.raises(UnsupportedModelError, match=message):
        check_supported(model)
    with pytest.raises(UnsupportedModelError, match=message):
        explain(model, torch.zeros(1, 3, 16, 16), [[0]])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"init_values": 1e-5},  # layer scale
        {"reg_tokens": 4, "no_embed_class": True},
        {"pre_norm": True},
        {"fc_norm": True},
        {"act_layer": "quick_gelu"},
        {"final_norm": False},
    ],
)
def test_supported_layouts(kwargs):
    check_supported(VisionTransformer(**TINY, **kwargs))


def test_vit_levels_remove_their_hooks():
    vit = build_classifier(
        {"backbone": "hybrid_tiny", "num_classes": 3, "img_size": 32, "pretrained": False}
    ).eval()
    tap = "patch_embed.backbone.stages.1"
    module = dict(vit.named_modules())[tap]
    levels = ViTLevels(vit, (-1,), (tap,), "affinity.net")
    assert not module._forward_hooks
    with torch.no_grad():
        maps = levels(torch.zeros(1, 3, 32, 32))
    assert len(maps) == 2 and maps[0].ndim == 4
    assert not module._forward_hooks
