"""Scoring folders of label masks against ground truth, and the per-stage result tables.

Predictions are palette PNGs ``<pred_dir>/<id>.png`` with labels 0..K. A prediction may
also hold 255 ("unsure", as confident seeds do): such pixels are left out of the
confusion matrix, so IoU, precision and recall are measured over the confident pixels
only, and ``coverage`` reports the share of ground-truth-labelled pixels (gt != 255)
that the prediction labels (pred != 255), in percent. A complete mask has coverage 100.

A split without ground truth (``wsss_core.data.layout.split_has_masks``) gets the same tables
with the text ``no ground truth`` in every score cell (``no_ground_truth_tables``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from wsss_core.data.layout import load_gt_mask
from wsss_core.data.palette import IGNORE_INDEX, load_mask
from wsss_core.evaluate.metrics import ConfusionMatrix

SUMMARY_COLUMNS = (
    "stage",
    "method",
    "split",
    "mIoU",
    "mean_precision",
    "mean_recall",
    "pixel_accuracy",
)
PER_CLASS_COLUMNS = ("class", "IoU", "precision", "recall")
NO_GROUND_TRUTH = "no ground truth"


@dataclass
class MaskEvaluation:
    """A confusion matrix over confident pixels and how many labelled pixels were confident."""

    confusion: ConfusionMatrix
    labelled_pixels: int  # ground truth != 255
    confident_pixels: int  # ground truth != 255 and prediction != 255

    @property
    def coverage(self) -> float:
        """Percent of ground-truth-labelled pixels that the prediction labels (not 255)."""
        if self.labelled_pixels == 0:
            return float("nan")
        return 100.0 * self.confident_pixels / self.labelled_pixels


def update_with_mask(evaluation: MaskEvaluation, pred: np.ndarray, gt: np.ndarray) -> None:
    """Add one prediction (255 = unsure) and its ground truth to ``evaluation``."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    labelled = gt != IGNORE_INDEX
    confident = labelled & (pred != IGNORE_INDEX)
    evaluation.labelled_pixels += int(labelled.sum())
    evaluation.confident_pixels += int(confident.sum())
    evaluation.confusion.update(pred[confident], gt[confident])


def _prediction_folder(pred_dir: str | os.PathLike, ids: Iterable[str]) -> tuple[Path, list[str]]:
    """The prediction folder and the ids to read from it; errors for no ids or no folder."""
    pred_dir, ids = Path(pred_dir), list(ids)
    if not ids:
        raise ValueError("no image ids to evaluate (empty split?)")
    if not pred_dir.is_dir():
        raise FileNotFoundError(
            f"prediction folder {pred_dir} does not exist: run the stage that writes it first"
        )
    return pred_dir, ids


def _prediction_file(pred_dir: Path, image_id: str) -> Path:
    """``<pred_dir>/<id>.png``; an error naming it when the stage did not write it."""
    path = pred_dir / f"{image_id}.png"
    if not path.is_file():
        raise FileNotFoundError(
            f"prediction {path} is missing for image '{image_id}': the stage that writes "
            f"{pred_dir} did not finish for every id; re-run it"
        )
    return path


def evaluate_masks_detailed(
    pred_dir: str | os.PathLike,
    gt_root: str | os.PathLike,
    ids: Iterable[str],
    num_classes: int,
    progress: bool = False,
) -> MaskEvaluation:
    """Score ``<pred_dir>/<id>.png`` against ``<gt_root>/SegmentationClass/<id>.png``."""
    pred_dir, ids = _prediction_folder(pred_dir, ids)
    evaluation = MaskEvaluation(ConfusionMatrix(num_classes), 0, 0)
    for image_id in tqdm(ids, desc=f"evaluate {pred_dir.name}", disable=not progress):
        path = _prediction_file(pred_dir, image_id)
        pred = load_mask(path)
        gt = load_gt_mask(gt_root, image_id, num_classes=num_classes)
        try:
            update_with_mask(evaluation, pred, gt)
        except ValueError as err:
            raise ValueError(f"{path}: {err}; re-run the stage that writes {pred_dir}") from err
    return evaluation


def check_predictions(pred_dir: str | os.PathLike, ids: Iterable[str]) -> None:
    """Every ``<pred_dir>/<id>.png`` exists and is a label mask (what a split without ground
    truth can still check of a stage)."""
    pred_dir, ids = _prediction_folder(pred_dir, ids)
    for image_id in ids:
        load_mask(_prediction_file(pred_dir, image_id))


def evaluate_masks(
    pred_dir: str | os.PathLike,
    gt_root: str | os.PathLike,
    ids: Iterable[str],
    num_classes: int,
    progress: bool = False,
) -> ConfusionMatrix:
    """Confusion matrix of the masks in ``pred_dir`` (255 predictions left out) for ``ids``."""
    return evaluate_masks_detailed(pred_dir, gt_root, ids, num_classes, progress).confusion


def full_class_names(class_names: Sequence[str], num_classes: int) -> list[str]:
    """Names of all C classes: the K foreground names get "background" in front."""
    names = list(class_names)
    if len(names) == num_classes - 1:
        return ["background", *names]
    if len(names) == num_classes:
        return names
    raise ValueError(
        f"{len(names)} class names for a confusion matrix over {num_classes} classes "
        f"(give the {num_classes - 1} foreground names, or all {num_classes} with background first)"
    )


def stage_tables(
    cm: ConfusionMatrix,
    class_names: Sequence[str],
    stage: str,
    method: str,
    split: str,
    extra: dict[str, object] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One summary row (stage, method, split, mIoU, mean precision/recall, pixel accuracy, then
    ``extra`` columns) and the per-class table (class, IoU, precision, recall); in percent."""
    scores = cm.scores()
    summary = {"stage": stage, "method": method, "split": split, **scores.summary()}
    for key, value in (extra or {}).items():
        if key in summary:
            raise ValueError(f"extra column '{key}' clashes with a summary column")
        summary[key] = value
    per_class = scores.per_class_frame(full_class_names(class_names, cm.num_classes))
    return pd.DataFrame([summary]), per_class


def no_ground_truth_tables(
    class_names: Sequence[str],
    stage: str,
    method: str,
    split: str,
    extra: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables of ``stage_tables`` for a split without ground truth: the same rows and
    columns (``extra`` columns too), ``no ground truth`` in every score cell."""
    summary: dict[str, object] = {"stage": stage, "method": method, "split": split}
    summary |= {column: NO_GROUND_TRUTH for column in (*SUMMARY_COLUMNS[3:], *extra)}
    names = ["background", *class_names]
    per_class = pd.DataFrame({"class": names})
    for column in PER_CLASS_COLUMNS[1:]:
        per_class[column] = NO_GROUND_TRUTH
    return pd.DataFrame([summary]), per_class


def score_text(value: object) -> str:
    """A score cell for a log line: ``12.34``, or the text of a cell without ground truth."""
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return str(value)


COMPARISON_PARAMETERS = ("threshold", "alpha")
HOLDOUT_COLUMNS = ("holdout_threshold", "holdout_alpha", "holdout_mIoU")


def comparison_table(
    summaries: Sequence[pd.DataFrame],
    per_class: Sequence[pd.DataFrame] | None = None,
    sources: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Methods side by side, best mIoU first: method, best background parameter(s), mIoU,
    the held-out choice and its mIoU where the summaries have them, mean precision, mean
    recall, then (when ``per_class`` tables are given, one per summary in
    the same order) one IoU column per class, named by the class. ``sources`` name the
    summaries in error messages (file paths)."""
    if not summaries:
        raise ValueError("no summaries to compare")
    if per_class is not None and len(per_class) != len(summaries):
        raise ValueError(f"{len(per_class)} per-class tables for {len(summaries)} summaries")
    sources = (
        list(sources) if sources is not None else [f"summary {i}" for i in range(len(summaries))]
    )
    required = ("method", "mIoU", "mean_precision", "mean_recall")
    for source, summary in zip(sources, summaries, strict=True):
        missing = [c for c in required if c not in summary.columns]
        if missing or len(summary) != 1:
            raise ValueError(
                f"{source} must be one row with columns {', '.join(required)}; it has "
                f"{len(summary)} row(s) and lacks {missing or 'nothing'}: re-run eval_cams"
            )
    table = pd.concat(list(summaries), ignore_index=True)
    duplicated = table["method"][table["method"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"method(s) {duplicated} appear in more than one summary")
    parameters = [c for c in COMPARISON_PARAMETERS if c in table.columns]
    holdout = [c for c in HOLDOUT_COLUMNS if c in table.columns]
    table = table[["method", *parameters, "mIoU", *holdout, "mean_precision", "mean_recall"]]
    if per_class is not None:
        ious = []
        for method, frame in zip(table["method"], per_class, strict=True):
            missing = [c for c in ("class", "IoU") if c not in frame.columns]
            if missing:
                raise ValueError(f"per-class table of '{method}' lacks columns {missing}")
            ious.append(frame.set_index("class")["IoU"].rename(method))
        classes = list(dict.fromkeys(name for frame in per_class for name in frame["class"]))
        clash = [name for name in classes if name in table.columns]
        if clash:
            raise ValueError(f"class name(s) {clash} clash with the comparison's columns")
        iou = pd.concat(ious, axis=1).T.reindex(columns=classes)
        table = table.join(iou, on="method")
    # best first; methods without a score (no ground truth) keep their order, last
    order = pd.to_numeric(table["mIoU"], errors="coerce")
    table = table.assign(_order=order).sort_values(
        "_order", ascending=False, kind="stable", na_position="last"
    )
    return table.drop(columns="_order").reset_index(drop=True)
