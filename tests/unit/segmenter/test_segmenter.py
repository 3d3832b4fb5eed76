"""DeepLabV3+ head: output shapes, output stride, low-level stage, pretrained file, loss masking."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from wsss_core.segmenter.model import (
    SegmenterConfig,
    build_segmenter,
    load_segmenter,
    save_segmenter,
    segmentation_loss,
)

torch.set_num_threads(1)

TINY = {
    "backbone": "resnet10t",
    "aspp_channels": 8,
    "low_level_channels": 4,
    "decoder_channels": 8,
    "num_classes": 3,
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmenter(TINY).eval()


@pytest.mark.parametrize("size", [(64, 64), (96, 96), (70, 50), (33, 47)])
def test_output_has_input_size(model, size):
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def _shapes_seen(model, x) -> dict[str, tuple[int, ...]]:
    seen = {}
    hooks = [
        model.aspp.register_forward_hook(lambda m, i, o: seen.__setitem__("aspp_in", i[0].shape)),
        model.low_proj.register_forward_hook(
            lambda m, i, o: seen.__setitem__("low_in", i[0].shape)
        ),
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("stride", [16, 8])
def test_output_stride_and_low_level_stage(stride):
    model = build_segmenter({**TINY, "output_stride": stride}).eval()
    seen = _shapes_seen(model, torch.randn(1, 3, 64, 96))
    assert seen["aspp_in"][-2:] == (64 // stride, 96 // stride)
    assert seen["low_in"][-2:] == (16, 24)  # the stride-4 stage
    info = model.backbone.feature_info
    assert seen["low_in"][1] == info.channels()[info.reduction().index(4)]


def test_aspp_rates_scale_with_output_stride():
    assert SegmenterConfig(output_stride=16).scaled_rates() == [6, 12, 18]
    assert SegmenterConfig(output_stride=8).scaled_rates() == [12, 24, 36]
    model = build_segmenter({**TINY, "output_stride": 8, "aspp_rates": [1, 2, 3]})
    dilations = [branch[0].dilation[0] for branch in model.aspp.branches[1:4]]
    assert dilations == [2, 4, 6]


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="output_stride"):
        build_segmenter({**TINY, "output_stride": 32})
    with pytest.raises(ValueError, match="backbone"):
        build_segmenter({**TINY, "backbone": "no_such_net"})
    with pytest.raises(ValueError, match="stride-4|backbone"):
        build_segmenter({**TINY, "backbone": "vit_tiny_patch16_224"})


def test_pretrained_from_backbone_file(tmp_path):
    torch.manual_seed(1)
    classifier = timm.create_model("resnet10t", num_classes=7)  # with its own fc head
    path = tmp_path / "resnet10t.pth"
    torch.save(classifier.state_dict(), path)
    torch.manual_seed(2)
    model = build_segmenter({**TINY, "pretrained": str(path)})
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[name]), name
    scratch = build_segmenter(TINY)
    assert not torch.equal(scratch.backbone.conv1[0].weight, classifier.conv1[0].weight)


def test_pretrained_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_segmenter({**TINY, "pretrained": str(tmp_path / "missing.pth")})
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet18").state_dict(), other)
    with pytest.raises(ValueError, match="missing"):
        build_segmenter({**TINY, "pretrained": str(other)})


def test_loss_of_one_pixel_is_hand_cross_entropy():
    logits = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    target = torch.tensor([[[0]]])
    expected = math.log(math.e + math.e**2 + math.e**3) - 1.0
    assert segmentation_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_loss_averages_labelled_pixels_only():
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 5.0]]).view(1, 3, 1, 2)
    ce = [
        math.log(math.e + 2) - 1.0,  # pixel 0, class 0
        math.log(2 + math.e**5) - 5.0,  # pixel 1, class 2
    ]
    both = segmentation_loss(logits, torch.tensor([[[0, 2]]]))
    assert both.item() == pytest.approx(sum(ce) / 2, rel=1e-6)
    first = segmentation_loss(logits, torch.tensor([[[0, 255]]]))
    assert first.item() == pytest.approx(ce[0], rel=1e-6)


def test_all_ignored_gives_zero_loss_and_gradient():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 4, 5), 255, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


def test_ignored_pixels_get_no_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.tensor([[[1, 255], [255, 0]]])
    segmentation_loss(logits, target).backward()
    assert torch.count_nonzero(logits.grad[0, :, 0, 1]) == 0
    assert torch.count_nonzero(logits.grad[0, :, 1, 0]) == 0
    assert torch.count_nonzero(logits.grad[0, :, 0, 0]) == 3


def test_loss_rejects_unknown_labels():
    with pytest.raises(ValueError, match="label 7"):
        segmentation_loss(torch.zeros(1, 3, 1, 2), torch.tensor([[[7, 0]]]))


def test_save_and_load_round_trip(tmp_path, model):
    path = tmp_path / "segmenter.pt"
    info = {"class_names": ["a", "b"], "mean": [0.5] * 3, "std": [0.25] * 3}
    save_segmenter(path, model, info)
    loaded, loaded_info = load_segmenter(path)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded_info["class_names"] == ["a", "b"]
    assert loaded_info["model_config"]["num_classes"] == 3
    assert not loaded.training


def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_segmenter"):
        load_segmenter(tmp_path / "none.pt")
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_segmenter(tmp_path / "x.pt")
