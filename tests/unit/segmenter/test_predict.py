"""Segmenter inference: flips, scales, normalisation, CRF and the predict_segmenter CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from workflow_utils import load_script

from wsss_core.data.layout import read_split
from wsss_core.data.palette import load_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.segmenter.model import build_segmenter, save_segmenter
from wsss_core.segmenter.predict import predict, predict_batch, predict_dataset

torch.set_num_threads(1)
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


def _conv_model(kernel: int, seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(3, classes, kernel, padding=kernel // 2).eval()


def _image(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reference(model, image, scale=1.0, mirror=False) -> np.ndarray:
    """Softmax at image size of one (scale, mirror) view, step by step."""
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    h, w = image.shape[:2]
    size = (round(h * scale), round(w * scale))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    if mirror:
        x = x.flip(-1)
    with torch.no_grad():
        logits = F.interpolate(model(x), size=(h, w), mode="bilinear", align_corners=False)
    probs = logits.softmax(1)[0]
    return (probs.flip(-1) if mirror else probs).numpy()


def test_probabilities_at_image_size_sum_to_one():
    probs = predict(_conv_model(3), _image(13, 17), MEAN, STD, scales=(1.0, 0.5, 1.5), flip=True)
    assert probs.shape == (4, 13, 17)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_normalisation_uses_mean_and_std():
    identity = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(3)[:, :, None, None])
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 51, 0
    logits = [(1.0 - 0.5) / 0.2, (0.2 - 0.4) / 0.25, (0.0 - 0.3) / 0.5]
    expected = np.exp(logits) / np.exp(logits).sum()
    probs = predict(identity.eval(), image, MEAN, STD)
    np.testing.assert_allclose(probs[:, 1, 1], expected, rtol=1e-5)


def test_flip_is_the_mean_of_both_views():
    model, image = _conv_model(3), _image()
    expected = (_reference(model, image) + _reference(model, image, mirror=True)) / 2
    got = predict(model, image, MEAN, STD, flip=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - predict(model, image, MEAN, STD)).max() > 1e-3


def test_flip_of_a_mirror_symmetric_model_and_input_changes_nothing():
    model = _conv_model(3, seed=1)
    with torch.no_grad():  # a kernel symmetric left-right makes the model flip-equivariant
        model.weight.copy_((model.weight + model.weight.flip(-1)) / 2)
    image = _image(10, 8)
    image = np.concatenate([image, image[:, ::-1]], axis=1)  # symmetric input
    np.testing.assert_allclose(
        predict(model, image, MEAN, STD, flip=True), predict(model, image, MEAN, STD), atol=1e-6
    )


def test_scales_average_their_probabilities():
    model, image = _conv_model(3, seed=2), _image(15, 20, seed=1)
    single = {s: predict(model, image, MEAN, STD, scales=(s,)) for s in (1.0, 0.5, 1.25)}
    for scale, probs in single.items():
        np.testing.assert_allclose(probs, _reference(model, image, scale), atol=1e-6)
    combined = predict(model, image, MEAN, STD, scales=(1.0, 0.5, 1.25))
    np.testing.assert_allclose(combined, sum(single.values()) / 3, atol=1e-6)
    assert np.abs(single[0.5] - single[1.0]).max() > 1e-3


def test_flat_image_gives_the_same_answer_at_every_scale():
    model = _conv_model(1, seed=3)
    image = np.full((9, 11, 3), 90, dtype=np.uint8)
    np.testing.assert_allclose(
        predict(model, image, MEAN, STD, scales=(0.5, 0.75, 2.0), flip=True),
        predict(model, image, MEAN, STD),
        atol=1e-6,
    )


def test_a_batch_gives_each_image_what_predict_gives_it():
    model = _conv_model(3, seed=4)
    images = [_image(11, 14, seed=i) for i in range(3)]
    for scales, flip in (((1.0,), False), ((1.0, 0.5, 1.5), True)):
        batch = predict_batch(model, images, MEAN, STD, scales, flip)
        assert batch.shape == (3, 4, 11, 14) and batch.dtype == np.float32
        for probs, image in zip(batch, images, strict=True):
            np.testing.assert_allclose(
                probs, predict(model, image, MEAN, STD, scales, flip), atol=1e-6
            )
    with pytest.raises(ValueError, match="differ in size"):
        predict_batch(model, [_image(11, 14), _image(12, 14)], MEAN, STD)
    with pytest.raises(ValueError, match="no images"):
        predict_batch(model, [], MEAN, STD)


def test_bad_scales_are_refused():
    with pytest.raises(ValueError, match="scales"):
        predict(_conv_model(1), _image(), MEAN, STD, scales=())
    with pytest.raises(ValueError, match="scales"):
        predict(_conv_model(1), _image(), MEAN, STD, scales=(1.0, -0.5))


class ConstantClass(nn.Module):
    """Logits that favour one class by a wide margin everywhere."""

    def __init__(self, classes: int, winner: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))
        with torch.no_grad():
            self.bias[winner] = 8.0

    def forward(self, x):
        return self.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred") / "data"
    generate_dataset(root, num_classes=3, image_size=36, num_train=2, num_val=3, seed=1)
    return root


def test_predict_dataset_writes_masks_and_crf_masks(data, tmp_path):
    ids = read_split(data, "val")
    seen = []
    predict_dataset(
        ConstantClass(4, winner=2),
        data,
        ids,
        tmp_path / "seg",
        MEAN,
        STD,
        flip=True,
        crf_out_dir=tmp_path / "crf",
        progress=seen.append,
    )
    assert len(seen) == len(ids)
    for image_id in ids:
        for folder in ("seg", "crf"):
            mask = load_mask(tmp_path / folder / f"{image_id}.png")
            assert mask.shape == (36, 36)
            assert (mask == 2).all()


def test_cli_writes_both_folders(data, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_segmenter(
        {
            "backbone": "resnet10t",
            "aspp_channels": 8,
            "low_level_channels": 4,
            "decoder_channels": 8,
            "num_classes": 4,
        }
    )
    model_path = tmp_path / "segmenter.pt"
    save_segmenter(model_path, model, {"class_names": ["a", "b", "c"], "mean": MEAN, "std": STD})
    script = load_script("segmenter_predict")
    argv = ["--model", str(model_path), "--data-root", str(data), "--split", "val"]
    argv += ["--device", "cpu", "--threads", "1"]
    inference = {"scales": [1.0, 0.75], "flip": True, "crf": {"iterations": 2}}
    argv += ["--config-json", json.dumps(inference), "--crf-out-dir", str(tmp_path / "crf")]
    assert script.main([*argv, "--out-dir", str(tmp_path / "seg")]) == 0
    ids = read_split(data, "val")
    for folder in ("seg", "crf"):
        assert sorted(p.stem for p in (tmp_path / folder).glob("*.png")) == sorted(ids)
        for image_id in ids:
            assert load_mask(tmp_path / folder / f"{image_id}.png").max() < 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    inference["crf"] = {"sigma": 1}
    bad = [*argv[:-4], "--config-json", json.dumps(inference)]
    bad += ["--crf-out-dir", str(tmp_path / "c2")]
    assert script.main([*bad, "--out-dir", str(tmp_path / "s2")]) == 2
    assert "segmenter_predict: error: unknown CRF parameter" in capsys.readouterr().err
    assert not (tmp_path / "c2").exists() and not (tmp_path / "s2").exists()
