"""Confusion-matrix scores against hand-computed cases."""

import numpy as np
import pytest

from wsss_core.evaluate.metrics import ConfusionMatrix, segmentation_scores


def test_hand_computed_two_classes_with_ignore():
    gt = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 0]])
    cm = ConfusionMatrix(2)
    cm.update(pred, gt)
    # rows gt, cols pred; the 255 pixel is not counted
    assert cm.matrix.tolist() == [[1, 1], [1, 2]]
    s = cm.scores()
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1, FN 1 -> 2/4
    np.testing.assert_allclose(s.iou, [1 / 3, 1 / 2])
    np.testing.assert_allclose(s.precision, [1 / 2, 2 / 3])
    np.testing.assert_allclose(s.recall, [1 / 2, 2 / 3])
    assert s.miou == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert s.pixel_accuracy == pytest.approx(3 / 5)


def test_absent_class_left_out_of_means():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 1]))
    s = cm.scores()
    assert np.isnan(s.iou[2])
    assert s.miou == pytest.approx(1.0)


def test_missed_class_counts_zero_precision():
    s = segmentation_scores(np.array([[2, 0], [3, 0]]))
    assert s.iou[1] == 0.0
    assert s.precision[1] == 0.0
    assert s.recall[1] == 0.0
    assert s.miou == pytest.approx((2 / 5 + 0) / 2)


def test_merge_equals_single_accumulation():
    rng = np.random.default_rng(0)
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    both = ConfusionMatrix(4)
    for cm in (a, b):
        gt = rng.integers(0, 4, size=(8, 8))
        pred = rng.integers(0, 4, size=(8, 8))
        cm.update(pred, gt)
        both.update(pred, gt)
    a.merge(b)
    assert (a.matrix == both.matrix).all()


def test_bad_labels_are_named():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="label 5"):
        cm.update(np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_per_class_frame_in_percent():
    s = segmentation_scores(np.array([[1, 0], [0, 1]]))
    df = s.per_class_frame(["background", "disc"])
    assert df["IoU"].tolist() == [100.0, 100.0]
    assert s.summary()["mIoU"] == 100.0
