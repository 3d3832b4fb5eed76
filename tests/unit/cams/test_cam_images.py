"""wsss_core.cams.images: the classifier's inputs, the classes to explain, the maps' files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wsss_core.cams.images import (
    batches,
    class_selection,
    classifier_inputs,
    file_label,
    input_size,
    present_classes,
    relevance_maps,
    write_relevance,
)
from wsss_core.cams.multiscale import explain_multiscale
from wsss_core.cams.store import upsample_normalise
from wsss_core.classifier.model import build_classifier
from wsss_core.cli import UserError
from wsss_core.data.transforms import eval_transform, image_to_tensor
from wsss_core.report.figures import heat_overlay

torch.set_num_threads(1)
NAMES = ["cat", "dog", "potted plant"]


def test_input_size_from_the_saved_config():
    assert input_size({"model_config": {"img_size": 32}}, "m.pt") == 32
    assert input_size({"model_config": {"img_size": [48, 48]}}, "m.pt") == 48
    with pytest.raises(ValueError, match="not square"):
        input_size({"model_config": {"img_size": [48, 32]}}, "m.pt")
    with pytest.raises(ValueError, match="no valid img_size"):
        input_size({"model_config": {}}, "m.pt")


def test_batches():
    assert [list(b) for b in batches(range(5), 2)] == [[0, 1], [2, 3], [4]]


def test_classifier_inputs_resize_and_normalise_each_image():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((20, 30, 3), (16, 16, 3))]
    x = classifier_inputs(images, 16, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), "cpu")
    assert x.shape == (2, 3, 16, 16)
    transform = eval_transform(16, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4))
    for got, image in zip(x, images, strict=True):
        torch.testing.assert_close(got, transform(image_to_tensor(image))[0])


def test_present_classes_at_one_half():
    probs = np.array([[0.5, 0.49, 0.9], [0.1, 0.2, 0.3]])
    assert present_classes(probs) == [[0, 2], []]


def test_class_selection():
    assert class_selection("present", NAMES) is None
    assert class_selection("all", NAMES) == [0, 1, 2]
    assert class_selection("potted plant, cat", NAMES) == [0, 2]
    with pytest.raises(UserError, match="unknown class.*cow.*classes: cat, dog, potted plant"):
        class_selection("cat,cow", NAMES)
    with pytest.raises(UserError, match="none named"):
        class_selection(",", NAMES)


def test_file_label():
    assert file_label("potted plant") == "potted_plant"
    assert file_label("a/b\\c:d") == "a_b_c_d" and file_label("tv-monitor.2") == "tv-monitor.2"


def test_relevance_maps_are_the_multiscale_maps_at_image_size():
    torch.manual_seed(0)
    cfg = {"backbone": "hybrid_tiny", "num_classes": 3, "img_size": 32, "pretrained": False}
    model = build_classifier(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    classes, sizes = [[0, 2], []], [(20, 30), (8, 9)]
    maps = relevance_maps(model, x, classes, sizes, "rollout", [1.0, 0.5], True, 1)
    reference = explain_multiscale(model, x, classes, "rollout", [1.0, 0.5], True, 1)
    assert maps[1].shape == (0, 8, 9)
    np.testing.assert_allclose(maps[0], upsample_normalise(reference[0].numpy(), (20, 30)))
    assert maps[0].max() == pytest.approx(1.0) and maps[0].min() >= 0


def test_write_relevance(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    maps = np.stack([np.linspace(0, 1, 30).reshape(5, 6), np.zeros((5, 6))]).astype(np.float32)
    written = write_relevance(tmp_path, "x", image, maps, [2, 0], NAMES, npy=True)
    assert written == [tmp_path / "x_potted_plant.png", tmp_path / "x_cat.png"]
    for path, heat in zip(written, maps, strict=True):
        np.testing.assert_array_equal(np.array(Image.open(path)), heat_overlay(image, heat))
        np.testing.assert_array_equal(np.load(path.with_suffix(".npy")), heat)
