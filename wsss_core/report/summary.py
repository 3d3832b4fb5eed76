"""The run's summary tables, assembled with pandas from the per-stage tables (never retyped).

Every evaluation rule writes a one-row summary CSV (stage, method, split, mIoU,
mean_precision, mean_recall, pixel_accuracy, and sometimes extra columns such as
``threshold`` or ``coverage``) and a per-class CSV (class, IoU, precision, recall).
The summary stacks the rows in pipeline order; the per-class table puts the IoU of
every stage side by side, one column per stage, one row per class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from wsss_core.evaluate.masks import SUMMARY_COLUMNS

STAGE_ORDER = (
    "relevance map",
    "seeds",
    "random walk",
    "random walk + CRF",
    "segmenter",
    "segmenter + CRF",
)
PER_CLASS_COLUMNS = ("class", "IoU")
LABEL_COLUMNS = ("stage", "method", "split", "class")  # text; the other columns are scores

PathLike = str | os.PathLike


def number_or_text(value: object) -> object:
    """A cell as a float where it is a number ("12.5" -> 12.5), else as it is ("no ground
    truth"): a column that mixes both is read back as text."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _read_csv(path: PathLike, required: Sequence[str], what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; run the rule that writes it")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise ValueError(f"{what} {path} is not a readable CSV ({err}); re-run its rule") from err
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} {path} lacks column(s) {', '.join(missing)} (has {', '.join(frame.columns)}); "
            "it must come from wsss_core.evaluate.masks.stage_tables: re-run its rule"
        )
    for column in frame.columns:
        if column not in LABEL_COLUMNS and frame[column].dtype == object:
            frame[column] = frame[column].map(number_or_text)
    return frame


def read_summary_row(path: PathLike) -> pd.DataFrame:
    """A one-row stage summary; an error names the file when it is not one."""
    frame = _read_csv(path, SUMMARY_COLUMNS, "summary table")
    if len(frame) != 1:
        raise ValueError(
            f"summary table {path} has {len(frame)} rows, expected one; re-run its rule"
        )
    return frame


def stage_rank(stage: str) -> int:
    """Position of a stage in the pipeline; stages not in STAGE_ORDER go last."""
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def _pipeline_order(rows: Sequence[pd.DataFrame]) -> list[int]:
    """Indices of the rows sorted by stage (stable: input order within a stage)."""
    return sorted(range(len(rows)), key=lambda i: stage_rank(str(rows[i]["stage"].iloc[0])))


def _check_unique(table: pd.DataFrame, sources: Sequence[PathLike]) -> None:
    keys = table[["stage", "method", "split"]].astype(str).agg(" / ".join, axis=1)
    duplicated = keys[keys.duplicated(keep=False)]
    if not duplicated.empty:
        files = [str(sources[i]) for i in duplicated.index]
        raise ValueError(
            f"stage/method/split {duplicated.iloc[0]} appears in more than one summary: {files}"
        )


def build_summary(summary_csvs: Sequence[PathLike]) -> pd.DataFrame:
    """One row per (stage, method, split), in pipeline order (STAGE_ORDER, then input order).

    The standard columns come first, then any extra columns (``threshold``, ``coverage``...)
    in the order they first appear in the sorted rows; rows without them have empty cells.
    """
    if not summary_csvs:
        raise ValueError("no summary tables given")
    rows = [read_summary_row(p) for p in summary_csvs]
    order = _pipeline_order(rows)
    table = pd.concat([rows[i] for i in order], ignore_index=True)
    _check_unique(table, [summary_csvs[i] for i in order])
    extra = [c for c in table.columns if c not in SUMMARY_COLUMNS]
    return table[[*SUMMARY_COLUMNS, *extra]]


def stage_label(row: pd.Series) -> str:
    """Column label of one stage in the per-class table: ``stage (method, split)``."""
    return f"{row['stage']} ({row['method']}, {row['split']})"


def per_class_iou_table(per_class_csvs: Sequence[PathLike], labels: Sequence[str]) -> pd.DataFrame:
    """Per-class IoU side by side: column ``class`` then one column per label, in the given order.

    Classes are listed in the order of the first table (classes only some tables have
    follow); a class a table lacks is left empty.
    """
    if len(per_class_csvs) != len(labels):
        raise ValueError(f"{len(per_class_csvs)} per-class tables for {len(labels)} labels")
    if len(set(labels)) != len(labels):
        raise ValueError(f"per-class column labels repeat: {list(labels)}")
    columns = []
    for path, label in zip(per_class_csvs, labels, strict=True):
        frame = _read_csv(path, PER_CLASS_COLUMNS, "per-class table")
        if frame["class"].duplicated().any():
            raise ValueError(f"per-class table {path} lists a class more than once")
        columns.append(frame.set_index("class")["IoU"].rename(label))
    classes = list(dict.fromkeys(name for column in columns for name in column.index))
    table = pd.concat(columns, axis=1).reindex(classes)
    return table.rename_axis("class").reset_index()


def summary_tables(
    summary_csvs: Sequence[PathLike], per_class_csvs: Sequence[PathLike]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary and the per-class IoU table, from pairs (i-th summary, i-th per-class CSV).

    Per-class columns follow the summary's row order and are labelled by ``stage_label``.
    """
    if len(summary_csvs) != len(per_class_csvs):
        raise ValueError(
            f"{len(summary_csvs)} summary tables but {len(per_class_csvs)} per-class tables; "
            "give one per-class table per summary, in the same order"
        )
    rows = [read_summary_row(p) for p in summary_csvs]
    order = _pipeline_order(rows)
    summary = build_summary([summary_csvs[i] for i in order])
    labels = [stage_label(row) for _, row in summary.iterrows()]
    per_class = per_class_iou_table([per_class_csvs[i] for i in order], labels)
    return summary, per_class
