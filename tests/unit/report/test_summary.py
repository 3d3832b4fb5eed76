"""Summary tables: stacking the per-stage rows in pipeline order, the per-class IoU table, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import load_script

from wsss_core.report.summary import STAGE_ORDER, build_summary, per_class_iou_table, summary_tables

CLASSES = ["background", "disc", "square"]


def _write_stage(
    folder: Path, name: str, stage: str, method: str, split: str, miou: float, **extra
):
    """A one-row summary and a per-class table as the evaluation rules write them."""
    row = {
        "stage": stage,
        "method": method,
        "split": split,
        "mIoU": miou,
        "mean_precision": miou + 1,
        "mean_recall": miou + 2,
        "pixel_accuracy": miou + 3,
        **extra,
    }
    summary = folder / f"{name}_summary.csv"
    pd.DataFrame([row]).to_csv(summary, index=False)
    per_class = folder / f"{name}.csv"
    ious = [miou - 10, miou, miou + 10]
    pd.DataFrame({"class": CLASSES, "IoU": ious, "precision": ious, "recall": ious}).to_csv(
        per_class, index=False
    )
    return summary, per_class


@pytest.fixture
def stages(tmp_path):
    """Stages written in scrambled order, with the extra columns real rules add."""
    specs = [
        ("seg_crf", "segmenter + CRF", "ta", "val", 61.0, {}),
        ("seeds", "seeds", "ta", "train", 40.0, {"coverage": 55.0}),
        ("cams_rollout", "relevance map", "rollout", "train", 30.0, {"threshold": 0.3}),
        ("seg", "segmenter", "ta", "val", 60.0, {}),
        ("cams_ta", "relevance map", "ta", "train", 35.0, {"threshold": 0.25}),
        ("rw_crf", "random walk + CRF", "ta", "train", 52.0, {"coverage": 100.0}),
        ("rw", "random walk", "ta", "train", 50.0, {"coverage": 100.0}),
    ]
    return [_write_stage(tmp_path, *spec[:5], **spec[5]) for spec in specs]


def test_summary_follows_the_pipeline_order(stages):
    table = build_summary([s for s, _ in stages])
    assert table["stage"].tolist() == [
        "relevance map",
        "relevance map",
        "seeds",
        "random walk",
        "random walk + CRF",
        "segmenter",
        "segmenter + CRF",
    ]
    # input order is kept within a stage
    assert table["method"].tolist()[:2] == ["rollout", "ta"]
    assert table["mIoU"].tolist() == [30.0, 35.0, 40.0, 50.0, 52.0, 60.0, 61.0]
    assert (table["mean_recall"] - table["mIoU"]).eq(2).all()
    assert list(table.columns) == [
        "stage",
        "method",
        "split",
        "mIoU",
        "mean_precision",
        "mean_recall",
        "pixel_accuracy",
        "threshold",
        "coverage",
    ]
    assert table["threshold"].tolist()[:2] == [0.3, 0.25]
    assert np.isnan(table["threshold"].iloc[2]) and np.isnan(table["coverage"].iloc[0])
    assert table["split"].tolist()[-2:] == ["val", "val"]


def test_unknown_stages_go_last(tmp_path, stages):
    extra, _ = _write_stage(tmp_path, "other", "ensemble", "ta", "val", 70.0)
    table = build_summary([extra, *(s for s, _ in stages)])
    assert table["stage"].iloc[-1] == "ensemble"
    assert STAGE_ORDER[0] == table["stage"].iloc[0]


def test_summary_errors_name_the_file(tmp_path, stages):
    bad = tmp_path / "bad_summary.csv"
    pd.DataFrame([{"stage": "seeds", "method": "ta", "mIoU": 3.0}]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="bad_summary.csv.*split"):
        build_summary([stages[0][0], bad])
    two_rows = tmp_path / "two_summary.csv"
    pd.concat([pd.read_csv(stages[0][0])] * 2).to_csv(two_rows, index=False)
    with pytest.raises(ValueError, match="two_summary.csv has 2 rows"):
        build_summary([two_rows])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        build_summary([tmp_path / "nope.csv"])
    with pytest.raises(ValueError, match="more than one summary"):
        build_summary([stages[0][0], stages[0][0]])


def test_per_class_table_puts_stages_side_by_side(tmp_path, stages):
    files = [p for _, p in stages[:2]]
    table = per_class_iou_table(files, ["A", "B"])
    assert list(table.columns) == ["class", "A", "B"]
    assert table["class"].tolist() == CLASSES
    assert table["A"].tolist() == [51.0, 61.0, 71.0]
    assert table["B"].tolist() == [30.0, 40.0, 50.0]
    partial = tmp_path / "partial.csv"
    pd.DataFrame({"class": ["square", "ring"], "IoU": [1.0, 2.0]}).to_csv(partial, index=False)
    table = per_class_iou_table([files[0], partial], ["A", "C"])
    assert table["class"].tolist() == [*CLASSES, "ring"]
    assert np.isnan(table.loc[0, "C"]) and table.loc[2, "C"] == 1.0 and table.loc[3, "C"] == 2.0
    with pytest.raises(ValueError, match="labels"):
        per_class_iou_table(files, ["A"])
    with pytest.raises(ValueError, match="repeat"):
        per_class_iou_table(files, ["A", "A"])


def test_summary_tables_pair_rows_and_columns(stages):
    summary, per_class = summary_tables([s for s, _ in stages], [p for _, p in stages])
    labels = list(per_class.columns[1:])
    assert len(labels) == len(summary)
    for label, (_, row) in zip(labels, summary.iterrows(), strict=True):
        assert label == f"{row['stage']} ({row['method']}, {row['split']})"
        # each per-class file was written with class IoUs centred on its row's mIoU
        assert per_class.loc[per_class["class"] == "disc", label].item() == row["mIoU"]
    with pytest.raises(ValueError, match="per-class"):
        summary_tables([s for s, _ in stages], [p for _, p in stages][:-1])


def test_cli_writes_csv_and_markdown(tmp_path, stages):
    out = tmp_path / "tables"
    argv = ["--inputs", *(str(s) for s, _ in stages)]
    argv += ["--per-class-inputs", *(str(p) for _, p in stages)]
    argv += ["--out-csv", str(out / "summary.csv"), "--out-md", str(out / "summary.md")]
    argv += ["--out-per-class", str(out / "summary_per_class.csv")]
    argv += ["--out-per-class-md", str(out / "summary_per_class.md")]
    assert load_script("report_summary").main(argv) == 0
    written = pd.read_csv(out / "summary.csv")
    pd.testing.assert_frame_equal(written, build_summary([s for s, _ in stages]))
    markdown = (out / "summary.md").read_text()
    assert "| segmenter + CRF" in markdown and "61.00" in markdown
    per_class = pd.read_csv(out / "summary_per_class.csv")
    assert per_class.shape == (3, 1 + len(stages))
    assert "random walk (ta, train)" in (out / "summary_per_class.md").read_text()


def test_a_split_without_ground_truth_beside_scored_ones(tmp_path):
    """Scores of a split with masks stay numbers (shown with two decimals) beside the 'no
    ground truth' cells of a split without them, in the summary and the per-class table."""
    from wsss_core.evaluate.masks import NO_GROUND_TRUTH, no_ground_truth_tables, stage_tables
    from wsss_core.evaluate.metrics import ConfusionMatrix
    from wsss_core.io import to_markdown, write_table

    cm = ConfusionMatrix(3)
    cm.matrix[:] = [[5, 1, 0], [0, 3, 1], [1, 0, 4]]
    scored = stage_tables(cm, ["a", "b"], "seeds", "ta", "train", extra={"coverage": 80.0})
    unscored = no_ground_truth_tables(["a", "b"], "segmenter", "ta", "val", extra=("coverage",))
    files = []
    for name, (summary, per_class) in (("s", scored), ("u", unscored)):
        write_table(summary, tmp_path / f"{name}_summary.csv")
        write_table(per_class, tmp_path / f"{name}.csv")
        files.append((tmp_path / f"{name}_summary.csv", tmp_path / f"{name}.csv"))
    summary, per_class = summary_tables([f[0] for f in files], [f[1] for f in files])
    assert summary.loc[0, "mIoU"] == pytest.approx(scored[0].loc[0, "mIoU"])
    assert summary.loc[1, "mIoU"] == NO_GROUND_TRUTH
    iou_b = 4 / (4 + 1 + 1)  # b: 4 right, 1 pixel of b called background, 1 of a called b
    assert per_class.iloc[2, 1] == pytest.approx(100 * iou_b)
    assert per_class.iloc[2, 2] == NO_GROUND_TRUTH
    rows = to_markdown(summary).splitlines()
    assert rows[2].split("|")[4].strip() == f"{scored[0].loc[0, 'mIoU']:.2f}"
    assert rows[3].split("|")[4].strip() == NO_GROUND_TRUTH
