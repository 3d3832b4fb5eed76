"""Segmentation scores from a confusion matrix over C classes (255 ignored).

Rows are ground truth, columns prediction. IoU_c = TP / (TP + FP + FN),
precision_c = TP / (TP + FP), recall_c = TP / (TP + FN). A class that never
occurs in ground truth nor prediction has no score (NaN) and is left out of
the means, as in PASCAL VOC's evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from wsss_core.data.palette import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a [C, C] confusion matrix over many label maps."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one prediction/ground-truth pair of equal shape."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction {pred.shape} and ground truth {target.shape} differ in shape"
            )
        target = np.asarray(target).ravel().astype(np.int64)
        pred = np.asarray(pred).ravel().astype(np.int64)
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.size and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(
                f"ground truth holds label {int(target.max())} outside 0..{self.num_classes - 1} "
                f"(and {self.ignore_index} for ignore)"
            )
        if pred.size and (pred.min() < 0 or pred.max() >= self.num_classes):
            bad = pred[(pred < 0) | (pred >= self.num_classes)][0]
            raise ValueError(f"prediction holds label {int(bad)} outside 0..{self.num_classes - 1}")
        index = target * self.num_classes + pred
        self.matrix += np.bincount(index, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix of the same size (e.g. from a shard)."""
        if other.matrix.shape != self.matrix.shape:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self.matrix += other.matrix

    def scores(self) -> SegmentationScores:
        return segmentation_scores(self.matrix)


@dataclass
class SegmentationScores:
    """Per-class and mean scores; per-class arrays hold NaN for absent classes."""

    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    miou: float
    mean_precision: float
    mean_recall: float
    pixel_accuracy: float

    def per_class_frame(self, class_names: list[str]) -> pd.DataFrame:
        """One row per class: IoU, precision and recall in percent."""
        if len(class_names) != len(self.iou):
            raise ValueError(f"{len(class_names)} class names for {len(self.iou)} classes")
        return pd.DataFrame(
            {
                "class": class_names,
                "IoU": 100 * self.iou,
                "precision": 100 * self.precision,
                "recall": 100 * self.recall,
            }
        )

    def summary(self) -> dict[str, float]:
        """Means in percent, as table cells."""
        return {
            "mIoU": 100 * self.miou,
            "mean_precision": 100 * self.mean_precision,
            "mean_recall": 100 * self.mean_recall,
            "pixel_accuracy": 100 * self.pixel_accuracy,
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def segmentation_scores(matrix: np.ndarray) -> SegmentationScores:
    """IoU, precision, recall per class and their means from a confusion matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    gt = matrix.sum(axis=1)
    pred = matrix.sum(axis=0)
    present = (gt + pred) > 0
    iou = _ratio(tp, gt + pred - tp)
    precision = _ratio(tp, pred)
    recall = _ratio(tp, gt)
    # A class present in ground truth but never predicted has precision 0/0: count it as 0
    # so that the mean does not reward missing a class; likewise recall for a predicted-only class.
    precision = np.where(present & np.isnan(precision), 0.0, precision)
    recall = np.where(present & np.isnan(recall), 0.0, recall)
    total = matrix.sum()
    return SegmentationScores(
        iou=iou,
        precision=precision,
        recall=recall,
        miou=float(np.nanmean(iou)) if present.any() else float("nan"),
        mean_precision=float(np.nanmean(precision)) if present.any() else float("nan"),
        mean_recall=float(np.nanmean(recall)) if present.any() else float("nan"),
        pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
    )
