"""Multi-label classification scores: average precision per class, mAP, F1 at a threshold.

AP is the non-interpolated average precision of PASCAL VOC 2010+ / scikit-learn's
``average_precision_score``: with the images ranked by decreasing score and tied
scores forming one threshold, AP = sum_n (R_n - R_{n-1}) P_n over the distinct
thresholds, P_n and R_n the precision and recall of keeping every image scoring at
least the n-th threshold. A class without any positive image has no AP (NaN) and is
left out of the mean.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def _as_binary(targets: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.size and not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be 0/1 labels")
    return targets.astype(bool)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of one class from scores[N] and 0/1 targets[N]; NaN without positives."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    targets = _as_binary(targets).ravel()
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in shape")
    positives = int(targets.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, targets = scores[order], targets[order]
    # The last index of each run of equal scores closes one threshold.
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    tp = np.cumsum(targets)[last_of_tie]
    kept = last_of_tie + 1
    precision = tp / kept
    recall = tp / positives
    recall_gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_gain * precision))


def per_class_average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of every class (columns) of scores[N, K] against targets[N, K]; NaN where no positive."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = _as_binary(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be [N, K]")
    return np.array(
        [average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1])]
    )


def mean_average_precision(
    scores: np.ndarray, targets: np.ndarray, class_names: list[str] | None = None
) -> float:
    """Mean of the per-class APs over classes with at least one positive (others skipped,
    with a warning naming them); NaN when no class has a positive."""
    ap = per_class_average_precision(scores, targets)
    skipped = np.flatnonzero(np.isnan(ap))
    if skipped.size:
        names = [class_names[k] if class_names else str(k) for k in skipped]
        log.warning("mAP skips classes without a positive image: %s", ", ".join(names))
    if skipped.size == ap.size:
        return float("nan")
    return float(np.nanmean(ap))


@dataclass
class ThresholdScores:
    """Precision, recall and F1 per class at one threshold, and their macro means.

    A class with neither positives nor predictions has no score (NaN) and is left out
    of the means; precision with no prediction (or recall with no positive) of a class
    that occurs on the other side counts as 0, so missing a class is never rewarded.
    """

    threshold: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray

    @property
    def macro_precision(self) -> float:
        return _nanmean(self.precision)

    @property
    def macro_recall(self) -> float:
        return _nanmean(self.recall)

    @property
    def macro_f1(self) -> float:
        return _nanmean(self.f1)


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def f1_at(scores_prob: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> ThresholdScores:
    """Per-class precision/recall/F1 of predicting ``score >= threshold`` on [N, K] arrays."""
    scores_prob = np.asarray(scores_prob, dtype=np.float64)
    targets = _as_binary(targets)
    if scores_prob.ndim != 2 or scores_prob.shape != targets.shape:
        raise ValueError(
            f"scores {scores_prob.shape} and targets {targets.shape} must both be [N, K]"
        )
    predicted = scores_prob >= threshold
    tp = (predicted & targets).sum(axis=0).astype(np.float64)
    n_pred = predicted.sum(axis=0).astype(np.float64)
    n_true = targets.sum(axis=0).astype(np.float64)
    present = (n_pred + n_true) > 0
    precision = np.where(
        present, np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0), np.nan
    )
    recall = np.where(
        present, np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0), np.nan
    )
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (n_pred + n_true): 0 when TP = 0.
    f1 = np.where(
        present, np.divide(2 * tp, n_pred + n_true, out=np.zeros_like(tp), where=present), np.nan
    )
    return ThresholdScores(float(threshold), precision, recall, f1)
