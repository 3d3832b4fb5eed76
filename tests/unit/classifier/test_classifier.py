"""Building, weight loading, saving and reloading of the ViT classifier (CPU, tiny sizes)."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
from timm.layers import HybridEmbed, PatchEmbed
from timm.models.vision_transformer import VisionTransformer

from wsss_core.cams.support import UnsupportedModelError, check_supported
from wsss_core.classifier.model import (
    ClassifierConfigError,
    build_classifier,
    load_classifier,
    normalization,
    save_classifier,
)
from wsss_core.classifier.stem import ConvStem

HYBRID = {
    "backbone": "hybrid_tiny",
    "num_classes": 5,
    "img_size": 96,
    "patch_size": 8,
    "pretrained": False,
}
PLAIN = {
    "backbone": "vit_tiny_patch16_224",
    "num_classes": 4,
    "img_size": 32,
    "patch_size": 8,
    "pretrained": False,
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokens(model: VisionTransformer, size: tuple[int, int]) -> int:
    with torch.no_grad():
        return model.forward_features(torch.randn(1, 3, *size)).shape[1]


def test_conv_stem_stride_and_channels():
    stem = ConvStem((8, 16, 24))
    out = stem(torch.randn(2, 3, 40, 56))
    assert out.shape == (2, 24, 5, 7)
    assert stem.stride == 8 and stem.num_features == 24


def test_hybrid_tiny_is_a_stock_vit_with_hybrid_embed():
    model = build_classifier(HYBRID)
    assert type(model) is VisionTransformer
    assert isinstance(model.patch_embed, HybridEmbed)
    assert isinstance(model.patch_embed.backbone, ConvStem)
    assert model.patch_embed.grid_size == (12, 12)
    assert len(model.blocks) == 2 and model.embed_dim == 128
    assert model.blocks[0].attn.num_heads == 2
    assert model.global_pool == "token" and model.num_prefix_tokens == 1
    assert model.head.out_features == 5
    # Dynamic image size: the position embedding is interpolated to other grids.
    assert _tokens(model, (96, 96)) == 1 + 12 * 12
    assert _tokens(model, (64, 80)) == 1 + 8 * 10
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 80)).shape == (2, 5)


def test_plain_vit_patch_size_and_dynamic_size():
    model = build_classifier(PLAIN)
    assert isinstance(model.patch_embed, PatchEmbed)
    assert model.patch_embed.patch_size == (8, 8)
    assert model.patch_embed.grid_size == (4, 4)
    assert model.pos_embed.shape == (1, 1 + 16, 192)
    assert _tokens(model, (32, 32)) == 17
    assert _tokens(model, (48, 40)) == 1 + 6 * 5


def test_dynamic_img_size_can_be_switched_off():
    model = build_classifier({**PLAIN, "dynamic_img_size": False})
    with pytest.raises(AssertionError):
        model(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_file_loads_backbone_and_keeps_a_new_head(tmp_path, suffix):
    torch.manual_seed(1)
    source = build_classifier({**PLAIN, "num_classes": 10})
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)

    torch.manual_seed(2)
    fresh = build_classifier(PLAIN)
    torch.manual_seed(2)
    model = build_classifier({**PLAIN, "pretrained": str(path)})
    assert model.head.weight.shape == (4, 192)
    # The head is the freshly initialised one, not the file's.
    assert torch.equal(model.head.weight, fresh.head.weight)
    assert torch.equal(model.head.bias, fresh.head.bias)
    loaded = model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(loaded[key], value), key
    assert not torch.equal(
        loaded["blocks.0.attn.qkv.weight"], fresh.state_dict()["blocks.0.attn.qkv.weight"]
    )


def test_pretrained_file_of_another_size_is_resampled(tmp_path):
    source = build_classifier({**PLAIN, "img_size": 64, "num_classes": 10})
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # wrapped, as many checkpoints are
    model = build_classifier({**PLAIN, "pretrained": str(path)})
    assert model.pos_embed.shape == (1, 1 + 16, 192)
    # The CLS position is kept, the patch grid interpolated from 8x8 to 4x4.
    assert torch.equal(model.pos_embed[:, 0], source.pos_embed[:, 0])
    assert torch.equal(model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)


def test_hybrid_pretrained_file_round_trip(tmp_path):
    torch.manual_seed(3)
    source = build_classifier({**HYBRID, "num_classes": 7})
    path = tmp_path / "hybrid.pth"
    torch.save(source.state_dict(), path)
    model = build_classifier({**HYBRID, "pretrained": str(path)})
    stem_key = "patch_embed.backbone.stages.0.0.0.weight"
    assert torch.equal(model.state_dict()[stem_key], source.state_dict()[stem_key])
    assert torch.equal(
        model.state_dict()["patch_embed.backbone.stages.2.0.1.running_var"],
        source.state_dict()["patch_embed.backbone.stages.2.0.1.running_var"],
    )
    assert model.head.weight.shape == (5, 128)


def test_weights_of_another_backbone_are_refused(tmp_path):
    path = tmp_path / "hybrid.pth"
    torch.save(build_classifier(HYBRID).state_dict(), path)
    with pytest.raises(ValueError, match="hybrid.pth"):
        build_classifier({**PLAIN, "pretrained": str(path)})
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        build_classifier({**PLAIN, "pretrained": str(broken)})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backbone": "resnet_nonexistent"}, "classifier.backbone"),
        ({"pretrained": True}, "classifier.pretrained"),
        ({"pretrained": "/nonexistent/weights.pth"}, "does not exist"),
        ({"num_classes": 0}, "classifier.num_classes"),
        ({"img_size": 90}, "multiple of 8"),
        ({"pretrained": "hub"}, "no hub weights"),
    ],
)
def test_bad_config_names_the_key(change, message):
    with pytest.raises(ClassifierConfigError, match=message):
        build_classifier({**HYBRID, **change})


def test_models_the_relevance_cannot_walk_are_refused():
    qk_norm = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                                qk_norm=True)  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="qk-norm"):
        check_supported(qk_norm)
    avg_pool = VisionTransformer(
        img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, global_pool="avg"
    )
    with pytest.raises(UnsupportedModelError, match="CLS"):
        check_supported(avg_pool)
    for backbone in ("vit_base_patch16_siglip_224", "vit_medium_patch16_gap_240"):
        with pytest.raises(ClassifierConfigError, match="no CLS token"):
            build_classifier({"backbone": backbone, "num_classes": 3, "img_size": 32,
                              "patch_size": 16, "pretrained": False})  # fmt: skip


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(4)
    model = build_classifier(HYBRID)
    # Move the batch-norm statistics away from their defaults so they must travel too.
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 96, 96))
    model.eval()
    names = ["a", "b", "c", "d", "e"]
    path = tmp_path / "model.pt"
    save_classifier(path, model, HYBRID, names)
    loaded, info = load_classifier(path, "cpu")
    assert not loaded.training
    assert info["class_names"] == names
    assert info["model_config"] == HYBRID
    assert info["mean"] == pytest.approx([0.485, 0.456, 0.406])
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded(x[:, :, :64, :72]), model(x[:, :, :64, :72]))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_load_classifier_never_downloads(tmp_path):
    cfg = {**PLAIN, "pretrained": "hub"}
    model = build_classifier(PLAIN)
    save_classifier(tmp_path / "m.pt", model, cfg, ["w", "x", "y", "z"])
    loaded, info = load_classifier(tmp_path / "m.pt")
    assert info["model_config"]["pretrained"] == "hub"
    # Hub-pretrained ViTs were trained with mean = std = 0.5.
    assert info["mean"] == [0.5, 0.5, 0.5] and info["std"] == [0.5, 0.5, 0.5]
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_normalization_choices():
    assert normalization(HYBRID) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert normalization({**PLAIN, "pretrained": "hub"}) == ([0.5] * 3, [0.5] * 3)
    assert normalization({**HYBRID, "mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}) == (
        [0.1, 0.2, 0.3],
        [1.0, 1.0, 1.0],
    )
    with pytest.raises(ClassifierConfigError, match="classifier.std"):
        normalization({**HYBRID, "mean": [0, 0, 0], "std": [1, 0, 1]})


def test_missing_or_corrupt_saved_classifier(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_classifier(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt"):
        load_classifier(bad)
