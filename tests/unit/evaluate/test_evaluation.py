"""Mask-folder evaluation, stage tables, the relevance-map comparison and their CLIs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import load_script

from wsss_core.data.layout import SPLITS_WITHOUT_MASKS, load_gt_mask, read_class_names, read_split
from wsss_core.data.palette import save_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.evaluate.masks import (
    NO_GROUND_TRUTH,
    check_predictions,
    comparison_table,
    evaluate_masks,
    evaluate_masks_detailed,
    no_ground_truth_tables,
    score_text,
    stage_tables,
)
from wsss_core.evaluate.metrics import ConfusionMatrix

GT = {
    "a": np.array([[0, 1, 1], [0, 2, 255]], dtype=np.uint8),
    "b": np.array([[2, 2, 0], [1, 0, 0]], dtype=np.uint8),
}
PRED = {
    "a": np.array([[0, 1, 2], [255, 2, 0]], dtype=np.uint8),
    "b": np.array([[2, 0, 0], [1, 1, 255]], dtype=np.uint8),
}
# (gt, pred) pairs with gt != 255 and pred != 255, counted by hand; rows gt, columns pred
HAND_MATRIX = np.array([[2, 1, 0], [0, 2, 1], [1, 0, 2]])


compare_cams = load_script("cams_compare")
eval_masks = load_script("evaluate_masks")


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for image_id, mask in GT.items():
        save_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
    (root / "classes.txt").write_text("cat\ndog\n")
    return root


@pytest.fixture
def pred_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "pred"
    for image_id, mask in PRED.items():
        save_mask(folder / f"{image_id}.png", mask)
    return folder


def test_evaluate_masks_counts_by_hand(tiny_root: Path, pred_dir: Path) -> None:
    cm = evaluate_masks(pred_dir, tiny_root, ["a", "b"], 3)
    np.testing.assert_array_equal(cm.matrix, HAND_MATRIX)


def test_coverage_counts_by_hand(tiny_root: Path, pred_dir: Path) -> None:
    evaluation = evaluate_masks_detailed(pred_dir, tiny_root, ["a", "b"], 3)
    assert evaluation.labelled_pixels == 11  # 5 in a (one 255), 6 in b
    assert evaluation.confident_pixels == 9  # one 255 prediction in each
    assert evaluation.coverage == pytest.approx(100 * 9 / 11)


def test_missing_prediction_is_named(tiny_root: Path, pred_dir: Path) -> None:
    (pred_dir / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="b.png"):
        evaluate_masks(pred_dir, tiny_root, ["a", "b"], 3)


def test_prediction_of_wrong_size_is_named(tiny_root: Path, pred_dir: Path) -> None:
    save_mask(pred_dir / "a.png", np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="a.png"):
        evaluate_masks(pred_dir, tiny_root, ["a", "b"], 3)


def test_prediction_with_unknown_label_is_named(tiny_root: Path, pred_dir: Path) -> None:
    save_mask(pred_dir / "b.png", np.full((2, 3), 7, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"b\.png.*label 7"):
        evaluate_masks(pred_dir, tiny_root, ["a", "b"], 3)


def test_stage_tables_values(tiny_root: Path, pred_dir: Path) -> None:
    cm = evaluate_masks(pred_dir, tiny_root, ["a", "b"], 3)
    summary, per_class = stage_tables(cm, ["cat", "dog"], "seeds", "rollout", "train", {"x": 1})
    assert list(summary.columns) == [
        "stage",
        "method",
        "split",
        "mIoU",
        "mean_precision",
        "mean_recall",
        "pixel_accuracy",
        "x",
    ]
    row = summary.iloc[0]
    assert (row["stage"], row["method"], row["split"], row["x"]) == ("seeds", "rollout", "train", 1)
    # every class: TP 2, 3 in ground truth, 3 predicted -> IoU 2/4, precision = recall = 2/3
    assert row["mIoU"] == pytest.approx(50.0)
    assert row["mean_precision"] == pytest.approx(200 / 3)
    assert row["mean_recall"] == pytest.approx(200 / 3)
    assert row["pixel_accuracy"] == pytest.approx(100 * 6 / 9)
    assert list(per_class["class"]) == ["background", "cat", "dog"]
    np.testing.assert_allclose(per_class["IoU"], 50.0)
    np.testing.assert_allclose(per_class["precision"], 200 / 3)


def test_stage_tables_class_names() -> None:
    cm = ConfusionMatrix(3)
    cm.matrix[:] = HAND_MATRIX
    _, with_bg = stage_tables(cm, ["bg", "cat", "dog"], "s", "m", "val")
    assert list(with_bg["class"]) == ["bg", "cat", "dog"]
    with pytest.raises(ValueError, match="1 class names"):
        stage_tables(cm, ["cat"], "s", "m", "val")
    with pytest.raises(ValueError, match="'mIoU'"):
        stage_tables(cm, ["cat", "dog"], "s", "m", "val", {"mIoU": 3})


def summary_and_per_class(matrix: list[list[int]], method: str, threshold: float):
    cm = ConfusionMatrix(3)
    cm.matrix[:] = np.array(matrix)
    return stage_tables(
        cm, ["cat", "dog"], "relevance map", method, "train", {"threshold": threshold}
    )


METHODS = {
    "rollout": ([[4, 0, 0], [2, 2, 0], [0, 0, 4]], 0.3),
    "transformer_attribution": ([[4, 0, 0], [0, 4, 0], [0, 0, 4]], 0.25),
    "attn_gradcam": ([[2, 2, 0], [2, 2, 0], [0, 1, 3]], 0.5),
}


def test_comparison_table_orders_methods_and_copies_values() -> None:
    tables = {m: summary_and_per_class(mat, m, t) for m, (mat, t) in METHODS.items()}
    summaries = [tables[m][0] for m in METHODS]
    per_class = [tables[m][1] for m in METHODS]
    table = comparison_table(summaries, per_class)
    assert list(table["method"]) == ["transformer_attribution", "rollout", "attn_gradcam"]
    assert list(table.columns) == [
        "method",
        "threshold",
        "mIoU",
        "mean_precision",
        "mean_recall",
        "background",
        "cat",
        "dog",
    ]
    assert table["mIoU"].is_monotonic_decreasing
    for _, row in table.iterrows():
        summary, frame = tables[row["method"]]
        for column in ("threshold", "mIoU", "mean_precision", "mean_recall"):
            assert row[column] == summary.loc[0, column]
        for name, iou in zip(frame["class"], frame["IoU"], strict=True):
            assert row[name] == iou
    assert table.loc[0, "mIoU"] == pytest.approx(100.0)


def test_comparison_table_errors() -> None:
    summary, _ = summary_and_per_class(METHODS["rollout"][0], "rollout", 0.3)
    with pytest.raises(ValueError, match="appear in more than one"):
        comparison_table([summary, summary])
    with pytest.raises(ValueError, match=r"cams_x\.csv.*mIoU"):
        comparison_table([summary.drop(columns="mIoU")], sources=["cams_x.csv"])
    with pytest.raises(ValueError, match="2 per-class tables for 1"):
        comparison_table([summary], [summary, summary])


def test_compare_cams_cli(tmp_path: Path) -> None:
    summaries, per_class = [], []
    for method, (matrix, threshold) in METHODS.items():
        summary, frame = summary_and_per_class(matrix, method, threshold)
        summaries.append(tmp_path / f"cams_{method}_summary.csv")
        per_class.append(tmp_path / f"cams_{method}.csv")
        summary.to_csv(summaries[-1], index=False)
        frame.to_csv(per_class[-1], index=False)
    out_csv, out_md = tmp_path / "cmp.csv", tmp_path / "cmp.md"
    argv = ["--summaries", *map(str, summaries), "--per-class", *map(str, per_class)]
    assert compare_cams.main([*argv, "--out-csv", str(out_csv), "--out-md", str(out_md)]) == 0
    table = pd.read_csv(out_csv)
    expected = comparison_table(
        [pd.read_csv(p) for p in summaries], [pd.read_csv(p) for p in per_class]
    )
    pd.testing.assert_frame_equal(table, expected)
    assert "transformer_attribution" in out_md.read_text().splitlines()[2]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_dataset(root, num_classes=3, image_size=48, num_train=4, num_val=3, seed=1)
    return root


def run_eval_masks(root: Path, pred: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    argv = [
        "--pred-dir", str(pred), "--data-root", str(root), "--split", "val",
        "--stage", "seeds", "--method", "rollout",
        "--out-summary", str(out / "s.csv"), "--out-per-class", str(out / "p.csv"),
        "--out-md", str(out / "p.md"),
    ]  # fmt: skip
    assert eval_masks.main(argv) == 0
    assert (out / "p.md").read_text().startswith("| class")
    return pd.read_csv(out / "s.csv"), pd.read_csv(out / "p.csv")


def test_eval_masks_cli_perfect_and_partial(synthetic_root: Path, tmp_path: Path) -> None:
    ids = read_split(synthetic_root, "val")
    perfect = tmp_path / "perfect"
    shutil.copytree(synthetic_root / "SegmentationClass", perfect)
    summary, per_class = run_eval_masks(synthetic_root, perfect, tmp_path)
    assert summary.loc[0, "mIoU"] == pytest.approx(100.0)
    assert summary.loc[0, "coverage"] == pytest.approx(100.0)
    assert list(per_class["class"]) == ["background", *read_class_names(synthetic_root)]

    # unsure (255) wherever the ground truth is background: scored on the objects only
    partial = tmp_path / "partial"
    labelled = foreground = 0
    for image_id in ids:
        gt = load_gt_mask(synthetic_root, image_id)
        save_mask(partial / f"{image_id}.png", np.where(gt == 0, 255, gt).astype(np.uint8))
        labelled += int((gt != 255).sum())
        foreground += int(((gt != 255) & (gt != 0)).sum())
    summary, per_class = run_eval_masks(synthetic_root, partial, tmp_path)
    assert summary.loc[0, "coverage"] == pytest.approx(100 * foreground / labelled)
    assert summary.loc[0, "mIoU"] == pytest.approx(100.0)
    assert np.isnan(per_class.loc[0, "IoU"])  # background never scored


def test_eval_masks_cli_equals_library(synthetic_root: Path, tmp_path: Path) -> None:
    ids = read_split(synthetic_root, "val")
    pred = tmp_path / "shifted"
    for image_id in ids:
        gt = load_gt_mask(synthetic_root, image_id)
        save_mask(pred / f"{image_id}.png", np.roll(np.where(gt == 255, 0, gt), 5, axis=1))
    summary, per_class = run_eval_masks(synthetic_root, pred, tmp_path)
    cm = evaluate_masks(pred, synthetic_root, ids, 4)
    expected_summary, expected_per_class = stage_tables(
        cm, read_class_names(synthetic_root), "seeds", "rollout", "val"
    )
    assert 0 < summary.loc[0, "mIoU"] < 100
    for column in expected_summary.columns:
        assert summary.loc[0, column] == pytest.approx(expected_summary.loc[0, column])
    pd.testing.assert_frame_equal(per_class, expected_per_class)


def test_no_ground_truth_tables_keep_the_columns_of_stage_tables(tiny_root: Path) -> None:
    scored, scored_per_class = stage_tables(
        ConfusionMatrix(3), ["cat", "dog"], "seeds", "rollout", "val", extra={"coverage": 1.0}
    )
    summary, per_class = no_ground_truth_tables(
        ["cat", "dog"], "seeds", "rollout", "val", extra=("coverage",)
    )
    assert list(summary.columns) == list(scored.columns)
    assert list(per_class.columns) == list(scored_per_class.columns)
    assert summary.iloc[0, :3].tolist() == ["seeds", "rollout", "val"]
    assert (summary.iloc[0, 3:] == NO_GROUND_TRUTH).all()
    assert per_class["class"].tolist() == ["background", "cat", "dog"]
    assert (per_class.iloc[:, 1:] == NO_GROUND_TRUTH).all().all()
    assert score_text(12.345) == "12.35" and score_text(NO_GROUND_TRUTH) == NO_GROUND_TRUTH


def test_comparison_without_ground_truth_keeps_the_method_order() -> None:
    rows = [
        pd.DataFrame([{"method": m, "threshold": NO_GROUND_TRUTH, "mIoU": NO_GROUND_TRUTH,
                       "mean_precision": NO_GROUND_TRUTH, "mean_recall": NO_GROUND_TRUTH}])
        for m in ("b", "a")
    ]  # fmt: skip
    assert comparison_table(rows)["method"].tolist() == ["b", "a"]


def test_eval_masks_cli_on_a_split_without_ground_truth(tiny_root: Path, pred_dir: Path) -> None:
    """A split listed in splits_without_masks.txt: every prediction must be there, and every
    score cell says 'no ground truth'."""
    (tiny_root / SPLITS_WITHOUT_MASKS).write_text("val\n")
    split_list = tiny_root / "ImageSets" / "Segmentation" / "val.txt"
    split_list.parent.mkdir(parents=True)
    split_list.write_text("a\nb\n")
    summary, per_class = run_eval_masks(tiny_root, pred_dir, tiny_root.parent)
    assert (
        summary.loc[0, "mIoU"] == NO_GROUND_TRUTH and summary.loc[0, "coverage"] == NO_GROUND_TRUTH
    )
    assert (per_class["IoU"] == NO_GROUND_TRUTH).all()
    (pred_dir / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="prediction .*b.png is missing"):
        check_predictions(pred_dir, ["a", "b"])
