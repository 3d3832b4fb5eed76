"""The classifier on more of timm's ViT family (DeiT-3, DINOv2 with and without registers,
CLIP with GELU and QuickGELU, EVA with a CLS head instead of its average pooling): built
from the config, fine-tuned one step, saved and reloaded, explained, and tapped by the
AffinityNet. timm's constructors get depth 2, width 32 and 2 heads (the families' own
features stay: layer scale, registers, no_embed_class, pre-norm, fc-norm, activation)."""

from __future__ import annotations

from functools import partial

import pytest
import timm
import torch
from torch import nn

import wsss_core.classifier.model as classifier_model
from wsss_core.affinity.net import AffinityNetConfig, build_affinity_net
from wsss_core.cams.relevance import explain
from wsss_core.classifier.model import build_classifier, load_classifier, save_classifier
from wsss_core.classifier.train import TrainConfig, build_optimizer, train_one_epoch

SMALL = {"depth": 2, "embed_dim": 32, "num_heads": 2}
FAMILIES = {  # backbone: image side (a multiple of the patch)
    "deit3_small_patch16_224": 32,
    "vit_small_patch14_dinov2": 28,
    "vit_small_patch14_reg4_dinov2": 28,
    "vit_base_patch16_clip_224": 32,
    "vit_base_patch16_clip_quickgelu_224": 32,
    "eva_large_patch14_196": 28,
}
NAMES = ["a", "b", "c"]


_create = timm.create_model


@pytest.fixture(autouse=True)
def small_timm_models(monkeypatch):
    """timm.create_model, as the classifier calls it, with the SMALL sizes."""
    monkeypatch.setattr(classifier_model.timm, "create_model", partial(_create, **SMALL))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(backbone: str) -> dict:
    return {"backbone": backbone, "num_classes": 3, "img_size": FAMILIES[backbone],
            "pretrained": False, "lr": 1e-3, "batch_size": 4}  # fmt: skip


@pytest.mark.parametrize("backbone", FAMILIES)
def test_families_build_fine_tune_reload_and_explain(backbone, tmp_path):
    cfg = config(backbone)
    torch.manual_seed(0)
    model = build_classifier(cfg)
    assert model.global_pool == "token" and model.cls_token is not None
    assert len(model.blocks) == 2 and model.embed_dim == 32
    side = FAMILIES[backbone]
    images = torch.randn(4, 3, side, side)
    targets = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tc = TrainConfig.from_dict(cfg)
    loss, _ = train_one_epoch(model, [(images, targets)], build_optimizer(model, tc), tc,
                              torch.device("cpu"), 0, 1, 0, "test")  # fmt: skip
    assert torch.isfinite(torch.tensor(loss))
    after = model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("blocks.0.") for k in moved) and "head.weight" in moved

    path = tmp_path / "model.pt"
    save_classifier(path, model, cfg, NAMES)
    reloaded, info = load_classifier(path)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), model(images), rtol=0, atol=0)

    maps = explain(reloaded, images[:2], [[0, 2], [1]], "transformer_attribution")
    grid = side // reloaded.patch_embed.patch_size[0]
    assert [tuple(m.shape) for m in maps] == [(2, grid, grid), (1, grid, grid)]
    assert all(torch.isfinite(m).all() and m.abs().max() > 0 for m in maps)

    net, _ = build_affinity_net(AffinityNetConfig(level_dim=4, feature_dim=8, output_stride=4),
                                reloaded, info)  # fmt: skip
    assert net(images[:1]).shape == (1, 8, side // 4, side // 4)


def test_a_cls_head_on_an_average_pooled_model_keeps_its_weights_layout(tmp_path):
    """EVA pools by average with an fc-norm; the classifier reads its CLS token instead but
    keeps the fc-norm, so that a weights file of the default model still fits."""
    default = _create("eva_large_patch14_196", pretrained=False, num_classes=5, img_size=28,
                      **SMALL)  # fmt: skip
    assert default.global_pool == "avg" and isinstance(default.norm, nn.Identity)
    weights = tmp_path / "eva.pth"
    torch.save(default.state_dict(), weights)
    model = build_classifier({**config("eva_large_patch14_196"), "pretrained": str(weights)})
    assert model.global_pool == "token" and isinstance(model.fc_norm, nn.LayerNorm)
    for key, value in default.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(model.state_dict()[key], value), key
