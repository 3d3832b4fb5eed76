"""The segmenter on the fine-tuned classifier (segmenter.net.backbone: classifier): its levels
are the classifier's, padding to the token stride, a frozen backbone, saving and loading
without the classifier file, and training through train_segmenter and the workflow script."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from workflow_utils import load_script

from wsss_core.classifier.model import build_classifier, save_classifier
from wsss_core.data.synthetic import generate_dataset
from wsss_core.segmenter.model import (
    ClassifierSegmenter,
    SegmenterConfig,
    build_segmenter,
    load_segmenter,
    save_segmenter,
)
from wsss_core.segmenter.train import TrainConfig, make_optimizer, parse_config, train_segmenter

torch.set_num_threads(1)

CLS_CFG = {"backbone": "hybrid_tiny", "num_classes": 2, "img_size": 32, "pretrained": False,
           "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4]}  # fmt: skip
STEM_TAP = "patch_embed.backbone.stages.1"  # hybrid_tiny stem stage 2: stride 4, 64 channels
NET = {"backbone": "classifier", "vit_blocks": [-1], "taps": [STEM_TAP], "decoder_channels": 8}


def _classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier(CLS_CFG).eval()


def _segmenter(**overrides) -> ClassifierSegmenter:
    cfg = SegmenterConfig.from_dict(
        {**NET, "num_classes": 3, "classifier_config": dict(CLS_CFG), **overrides}
    )
    return build_segmenter(cfg, _classifier())


def test_levels_are_the_classifiers_and_inputs_pad_to_the_token_stride():
    vit = _classifier()
    model = build_segmenter(
        SegmenterConfig.from_dict({**NET, "num_classes": 3, "classifier_config": dict(CLS_CFG)}),
        vit,
    ).eval()
    assert model.backbone.vit is vit  # the fine-tuned weights themselves, not a copy
    assert model.stride == 8  # hybrid_tiny: 32 px -> 4 x 4 tokens
    # the stem tap (64 channels) then the last block's tokens (128 channels)
    assert [p[0].in_channels for p in model.project] == [64, 128]
    x = torch.randn(2, 3, 33, 47)
    with torch.no_grad():
        out = model(x)
        # padding right/bottom with 0 up to 40 x 48 and cropping gives the same logits
        padded = model(F.pad(x, (0, 1, 0, 7)))[..., :33, :47]
    assert out.shape == (2, 3, 33, 47)
    assert torch.allclose(out, padded, atol=1e-6)
    # a size that is a multiple of the stride is not padded: the decoder grid is input / 4
    seen = {}
    hook = model.classifier.register_forward_hook(lambda m, i, o: seen.update(grid=o.shape[-2:]))
    with torch.no_grad():
        model(torch.randn(1, 3, 40, 64))
    hook.remove()
    assert tuple(seen["grid"]) == (10, 16)


def test_frozen_backbone_keeps_weights_and_statistics():
    model = _segmenter()
    model.freeze_backbone()
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    optimizer = make_optimizer(model, TrainConfig(optimizer="adamw", lr=0.01, backbone_lr_mult=0))
    assert len(optimizer.param_groups) == 1  # the head's only
    model.train()
    assert not model.backbone.training and model.project.training
    target = torch.randint(0, 3, (2, 32, 32))
    for _ in range(3):
        loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key  # weights and BN running stats
    assert not torch.equal(model.classifier.weight, head_before)


def test_save_and_load_need_no_classifier_file(tmp_path):
    model = _segmenter().eval()
    path = tmp_path / "segmenter.pt"
    save_segmenter(path, model, {"class_names": ["a", "b"], "mean": [0.5] * 3, "std": [0.5] * 3})
    loaded, info = load_segmenter(path)
    assert info["model_config"]["classifier_config"]["backbone"] == "hybrid_tiny"
    x = torch.randn(1, 3, 30, 41)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_config_errors_name_the_keys():
    with pytest.raises(ValueError, match="segmenter.net.vit_blocks and segmenter.net.taps"):
        _segmenter(vit_blocks=[], taps=[])
    with pytest.raises(ValueError, match="segmenter.net.taps: the classifier has no module 'x'"):
        _segmenter(taps=["x"])
    with pytest.raises(ValueError, match="segmenter.net.vit_blocks: block 9"):
        _segmenter(vit_blocks=[9])
    fixed_size = {**CLS_CFG, "dynamic_img_size": False}
    with pytest.raises(ValueError, match="classifier.dynamic_img_size false"):
        build_segmenter({**NET, "num_classes": 3, "classifier_config": fixed_size})
    with pytest.raises(ValueError, match="model_config is missing"):
        build_segmenter({**NET, "num_classes": 3})
    # the classifier's config comes from its file, never from segmenter.net
    with pytest.raises(ValueError, match="unknown config key.*segmenter.net.classifier_config"):
        parse_config({**NET, "classifier_config": dict(CLS_CFG)}, num_classes=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny dataset (its masks as pseudo masks) and a saved classifier of its classes."""
    root = tmp_path_factory.mktemp("clsseg")
    generate_dataset(root / "data", num_classes=2, image_size=32, num_train=8, num_val=2, seed=4)
    save_classifier(root / "model.pt", _classifier(), CLS_CFG, ["c1", "c2"])
    return root


TRAIN = {**NET, "epochs": 2, "batch_size": 4, "crop_size": 32, "optimizer": "adamw",
         "lr": 0.01, "backbone_lr_mult": 0.0, "val_images": 2}  # fmt: skip


def test_training_uses_the_classifier_and_its_normalisation(run, tmp_path):
    data = run / "data"
    result = train_segmenter(data, "train", data / "SegmentationClass", tmp_path / "seg", TRAIN,
                             seed=1, show_progress=False, val_split="val",
                             classifier=run / "model.pt")  # fmt: skip
    assert result.history["val_mIoU"].between(0, 1).all()
    model, info = load_segmenter(result.model_path)
    # the classifier's mean and std replace segmenter.net.mean and std
    assert info["mean"] == pytest.approx(CLS_CFG["mean"]) and info["std"] == pytest.approx(
        CLS_CFG["std"]
    )
    # frozen: the ViT inside the segmenter is the classifier, weight for weight
    vit_state = _classifier().state_dict()
    for key, value in vit_state.items():
        assert torch.equal(model.backbone.vit.state_dict()[key], value), key
    with pytest.raises(ValueError, match="needs the run's classifier file"):
        train_segmenter(data, "train", data / "SegmentationClass", tmp_path / "none", TRAIN,
                        show_progress=False)  # fmt: skip


def test_workflow_script_passes_the_classifier(run, tmp_path):
    data = run / "data"
    argv = ["--masks", str(data / "SegmentationClass"), "--data-root", str(data),
            "--split", "train", "--config-json", json.dumps({**TRAIN, "epochs": 1}),
            "--classifier", str(run / "model.pt"), "--out-dir", str(tmp_path / "out"),
            "--log", str(tmp_path / "train.log"), "--threads", "1", "--seed", "0",
            "--device", "cpu"]  # fmt: skip
    assert load_script("segmenter_train").main(argv) == 0
    model, _ = load_segmenter(tmp_path / "out" / "segmenter.pt")
    assert isinstance(model, ClassifierSegmenter)
