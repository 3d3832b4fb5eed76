"""The VOC test-server export (wsss_core.segmenter.export): the tar's layout, the class check,
the test list."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from wsss_core.data.palette import load_mask, save_mask
from wsss_core.data.voc import VOC_CLASSES
from wsss_core.segmenter.export import check_voc_classes, pack_results, voc_test_ids


def test_pack_results_holds_every_mask_under_the_server_path(tmp_path):
    masks = {"b": np.array([[0, 20]], np.uint8), "a": np.array([[15]], np.uint8)}
    for image_id, mask in masks.items():
        save_mask(tmp_path / "m" / f"{image_id}.png", mask)
    tar_path = tmp_path / "out.tar"
    assert pack_results(tmp_path / "m", ["b", "a"], tar_path) == 2
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        assert names == [
            "results/VOC2012/Segmentation/comp6_test_cls/b.png",
            "results/VOC2012/Segmentation/comp6_test_cls/a.png",
        ]
        tar.extractall(tmp_path / "x", filter="data")
    for image_id, mask in masks.items():
        path = tmp_path / "x" / "results/VOC2012/Segmentation/comp6_test_cls" / f"{image_id}.png"
        np.testing.assert_array_equal(load_mask(path), mask)
    first = tar_path.read_bytes()
    pack_results(tmp_path / "m", ["b", "a"], tar_path)
    assert tar_path.read_bytes() == first  # same masks, same bytes


def test_pack_results_names_a_missing_prediction(tmp_path):
    save_mask(tmp_path / "m" / "a.png", np.zeros((1, 1), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"lacks the predictions of 1 test images \(b\)"):
        pack_results(tmp_path / "m", ["a", "b"], tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


def test_only_a_segmenter_of_the_voc_classes_is_exported():
    check_voc_classes(list(VOC_CLASSES), "seg.pt")
    with pytest.raises(ValueError, match="seg.pt predicts the classes .* data.source: voc2012"):
        check_voc_classes(["disc", "square"], "seg.pt")
    with pytest.raises(ValueError):
        check_voc_classes(list(reversed(VOC_CLASSES)), "seg.pt")


def test_voc_test_ids_need_every_image(tmp_path):
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "test.txt").write_text("x\ny\n")
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "JPEGImages" / "x.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"1 images .* \(first y.jpg\)"):
        voc_test_ids(tmp_path)
    (tmp_path / "JPEGImages" / "y.jpg").write_bytes(b"")
    assert voc_test_ids(tmp_path) == ["x", "y"]
