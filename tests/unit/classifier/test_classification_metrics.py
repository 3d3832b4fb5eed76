"""Average precision, mAP and thresholded F1 against hand-computed values."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from wsss_core.classifier.metrics import (
    average_precision,
    f1_at,
    mean_average_precision,
    per_class_average_precision,
)


def test_ap_hand_computed_without_ties():
    # Ranked: +, -, +, -, +  -> precision at each positive 1/1, 2/3, 3/5.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = np.array([1, 0, 1, 0, 1])
    assert average_precision(scores, targets) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ap_ties_form_one_threshold():
    # Thresholds 0.9 (P=1, R=1/3), 0.5 (P=2/3, R=2/3: the tie counts as one step), 0.1 (P=3/4).
    scores = np.array([0.5, 0.9, 0.1, 0.5])
    targets = np.array([0, 1, 1, 1])
    assert average_precision(scores, targets) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # A tie of one positive and one negative at the top: P = 1/2 at R = 1.
    assert average_precision(np.array([0.3, 0.3]), np.array([1, 0])) == pytest.approx(0.5)


def test_ap_extremes_and_invariance():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert average_precision(np.array([0.9, 0.1]), np.array([0, 1])) == pytest.approx(0.5)
    assert math.isnan(average_precision(np.array([0.2, 0.4]), np.array([0, 0])))
    rng = np.random.default_rng(0)
    scores = rng.random(50)
    targets = (rng.random(50) < 0.3).astype(int)
    perm = rng.permutation(50)
    ap = average_precision(scores, targets)
    assert average_precision(scores[perm], targets[perm]) == pytest.approx(ap)
    # Only the ranking matters: a monotone transform of the scores keeps AP.
    assert average_precision(np.exp(3 * scores), targets) == pytest.approx(ap)


def test_ap_rejects_bad_targets():
    with pytest.raises(ValueError, match="0/1"):
        average_precision(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="shape"):
        average_precision(np.array([0.1, 0.2]), np.array([0, 1, 1]))


def test_map_skips_and_names_classes_without_positives(caplog):
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.9, 0.4], [0.1, 0.2, 0.3]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    per_class = per_class_average_precision(scores, targets)
    # class 0: ranked +,-,+ -> (1 + 2/3)/2; class 1: ranked +,+ ... scores .9(+) .2(+) .1(-) -> 1.
    assert per_class[0] == pytest.approx((1 + 2 / 3) / 2)
    assert per_class[1] == pytest.approx(1.0)
    assert math.isnan(per_class[2])
    with caplog.at_level(logging.WARNING):
        value = mean_average_precision(scores, targets, class_names=["cat", "dog", "cow"])
    assert value == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)
    assert "cow" in caplog.text
    assert math.isnan(mean_average_precision(scores, np.zeros_like(targets)))


def test_f1_at_threshold_hand_computed():
    probs = np.array([[0.9, 0.6, 0.1], [0.4, 0.7, 0.2], [0.6, 0.2, 0.3], [0.5, 0.1, 0.1]])
    targets = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]])
    scores = f1_at(probs, targets, threshold=0.5)
    # class 0: predicted rows 0, 2, 3 (0.5 >= 0.5); TP 2 (rows 0, 3), FP 1, FN 1.
    assert scores.precision[0] == pytest.approx(2 / 3)
    assert scores.recall[0] == pytest.approx(2 / 3)
    assert scores.f1[0] == pytest.approx(2 / 3)
    # class 1: predicted rows 0, 1; TP 1, FP 1, FN 0 -> P 1/2, R 1, F1 2/3.
    assert scores.precision[1] == pytest.approx(0.5)
    assert scores.recall[1] == pytest.approx(1.0)
    assert scores.f1[1] == pytest.approx(2 / 3)
    # class 2: never predicted nor present -> no score, left out of the means.
    assert math.isnan(scores.f1[2]) and math.isnan(scores.precision[2])
    assert scores.macro_f1 == pytest.approx(2 / 3)
    assert scores.macro_precision == pytest.approx((2 / 3 + 0.5) / 2)
    assert scores.macro_recall == pytest.approx((2 / 3 + 1.0) / 2)


def test_f1_missing_a_present_class_scores_zero():
    probs = np.array([[0.1], [0.2]])
    targets = np.array([[1], [0]])
    scores = f1_at(probs, targets)
    assert scores.precision[0] == 0.0 and scores.recall[0] == 0.0 and scores.f1[0] == 0.0
