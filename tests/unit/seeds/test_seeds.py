"""Seeds from relevance maps: background scores, label maps, sweeps, CRF seeds and the CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import load_script

import wsss_core.seeds.labels as seeds_module
from wsss_core.cams.store import CamReader, CamRecord, write_store
from wsss_core.data.layout import load_gt_mask, load_image, read_class_names, read_split
from wsss_core.data.palette import load_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.evaluate.masks import stage_tables
from wsss_core.evaluate.metrics import ConfusionMatrix
from wsss_core.evaluate.sweep import (
    best_threshold,
    holdout_choice,
    merge_sweeps,
    split_holdout,
    sweep_counts,
    sweep_thresholds,
)
from wsss_core.seeds.crf import CRFParams
from wsss_core.seeds.labels import (
    alpha_labels,
    background_score,
    crf_seeds,
    label_map,
    seed_labels,
    threshold_labels,
)

# two classes (indices 3 and 7) on a 2 x 3 image
MAPS = np.array(
    [
        [[0.9, 0.2, 0.0], [0.5, 0.1, 0.3]],
        [[0.1, 0.6, 0.0], [0.5, 0.8, 0.2]],
    ],
    dtype=np.float32,
)
CLASSES = [3, 7]


def test_background_score_by_hand() -> None:
    # max over classes [[.9, .6, 0], [.5, .8, .3]] -> 1 - max = [[.1, .4, 1], [.5, .2, .7]]
    np.testing.assert_allclose(
        background_score(MAPS, 2), [[0.01, 0.16, 1.0], [0.25, 0.04, 0.49]], rtol=1e-5
    )
    np.testing.assert_allclose(
        background_score(MAPS, 1), [[0.1, 0.4, 1.0], [0.5, 0.2, 0.7]], rtol=1e-6
    )


def test_background_score_without_classes_is_one() -> None:
    np.testing.assert_array_equal(background_score(np.zeros((0, 2, 3), np.float32), 4), 1.0)


def test_label_map_by_hand() -> None:
    # background (alpha 2) [[.01, .16, 1], [.25, .04, .49]]; the tie at (1, 0) goes to class 3
    expected = [[4, 8, 0], [4, 8, 0]]
    np.testing.assert_array_equal(label_map(MAPS, CLASSES, background_score(MAPS, 2)), expected)
    np.testing.assert_array_equal(alpha_labels(MAPS, CLASSES, 2), expected)
    assert alpha_labels(MAPS, CLASSES, 2).dtype == np.uint8


def test_threshold_labels_by_hand() -> None:
    np.testing.assert_array_equal(threshold_labels(MAPS, CLASSES, 0.55), [[4, 8, 0], [0, 8, 0]])
    # a class score equal to the background score goes to the background
    np.testing.assert_array_equal(threshold_labels(MAPS, CLASSES, 0.6), [[4, 0, 0], [0, 8, 0]])
    np.testing.assert_array_equal(threshold_labels(MAPS, CLASSES, 0.0), [[4, 8, 0], [4, 8, 4]])
    np.testing.assert_array_equal(threshold_labels(MAPS[:0], [], 0.1), np.zeros((2, 3)))


def test_label_map_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="2 maps"):
        threshold_labels(MAPS, [3], 0.5)
    with pytest.raises(ValueError, match="differ in size"):
        label_map(MAPS, CLASSES, np.zeros((3, 3), np.float32))


@pytest.mark.parametrize(("mode", "values"), [("threshold", [0.1, 0.35, 0.6]), ("alpha", [1, 4])])
def test_sweep_counts_equal_separate_evaluations(mode: str, values: list[float]) -> None:
    gt = np.array([[4, 8, 0], [255, 8, 4]], dtype=np.uint8)
    ties = [0.5, 0.6, 2] if mode == "threshold" else values  # MAPS holds 0.5 and 0.6
    for value, matrix in zip(ties, sweep_counts(MAPS, CLASSES, gt, ties, 9, mode), strict=True):
        cm = ConfusionMatrix(9)
        cm.update(seed_labels(MAPS, CLASSES, mode, value), gt)
        np.testing.assert_array_equal(matrix, cm.matrix)
    rng = np.random.default_rng(0)
    for num_maps in (0, 1, 3):
        maps = rng.uniform(0, 1, (num_maps, 9, 11)).astype(np.float32)
        classes = sorted(rng.choice(4, num_maps, replace=False).tolist())
        gt = rng.integers(0, 5, (9, 11)).astype(np.uint8)
        gt[rng.uniform(size=gt.shape) < 0.2] = 255
        counts = sweep_counts(maps, classes, gt, values, 5, mode)
        for value, matrix in zip(values, counts, strict=True):
            cm = ConfusionMatrix(5)
            cm.update(seed_labels(maps, classes, mode, value), gt)
            np.testing.assert_array_equal(matrix, cm.matrix)


def matrix_with(diagonal: list[int], off: int) -> ConfusionMatrix:
    cm = ConfusionMatrix(2)
    cm.matrix[:] = [[diagonal[0], off], [0, diagonal[1]]]
    return cm


def test_best_threshold_picks_the_highest_miou() -> None:
    sweep = {
        0.1: matrix_with([1, 1], 3),  # IoU 1/4 and 1/4: mIoU 0.25
        0.3: matrix_with([3, 3], 1),  # 3/4 and 3/4: mIoU 0.75, the best
        0.2: matrix_with([1, 2], 2),  # 1/3 and 1/2
        0.4: ConfusionMatrix(2),  # nothing scored: NaN, never chosen
    }
    value, cm = best_threshold(sweep)
    assert value == 0.3 and cm is sweep[0.3]
    # on a tie the smallest parameter wins
    sweep[0.25] = matrix_with([3, 3], 1)
    assert best_threshold(sweep)[0] == 0.25
    with pytest.raises(ValueError, match="empty"):
        best_threshold({})


def test_split_holdout_takes_every_nth_id() -> None:
    ids = list("abcdefg")
    assert split_holdout(ids, 3) == (["a", "d", "g"], ["b", "c", "e", "f"])
    assert split_holdout(ids, 2) == (["a", "c", "e", "g"], ["b", "d", "f"])
    for bad in (1, 0, True, 2.0):
        with pytest.raises(ValueError, match="cams.eval.holdout_every"):
            split_holdout(ids, bad)
    with pytest.raises(ValueError, match="none to score"):
        split_holdout(["a"], 5)


def test_holdout_choice_scores_the_held_out_best_on_the_other_images() -> None:
    held = {0.1: matrix_with([1, 1], 3), 0.3: matrix_with([3, 3], 1)}  # best on held: 0.3
    scored = {0.1: matrix_with([3, 3], 0), 0.3: matrix_with([1, 2], 2)}  # best on scored: 0.1
    value, cm = holdout_choice(held, scored)
    assert value == 0.3 and cm is scored[0.3]  # 1/3 and 1/2: below the scored images' best
    merged = merge_sweeps(held, scored)
    np.testing.assert_array_equal(merged[0.1].matrix, [[4, 3], [0, 4]])
    np.testing.assert_array_equal(merged[0.3].matrix, [[4, 3], [0, 5]])
    with pytest.raises(ValueError, match="different values"):
        merge_sweeps(held, {0.1: scored[0.1]})


def stripe_case() -> tuple[np.ndarray, np.ndarray]:
    """Four 8-px stripes of distinct colours; one class map of 1.0, 0.15, 0.02 and 0.0."""
    image = np.zeros((8, 32, 3), dtype=np.uint8)
    maps = np.zeros((1, 8, 32), dtype=np.float32)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120)]
    for stripe, (colour, value) in enumerate(zip(colours, [1.0, 0.15, 0.02, 0.0], strict=True)):
        image[:, 8 * stripe : 8 * stripe + 8] = colour
        maps[0, :, 8 * stripe : 8 * stripe + 8] = value
    return image, maps


def test_crf_seeds_confident_foreground_background_and_unsure() -> None:
    image, maps = stripe_case()
    seeds = crf_seeds(image, maps, [5], alpha_low=4, alpha_high=32, params=CRFParams())
    # 1.0: foreground at both alphas. 0.15: (0.85)^4 = 0.52 wins at low alpha but
    # (0.85)^32 = 0.006 loses at high alpha -> unsure. 0.02: (0.98)^32 = 0.52 -> background.
    expected = np.repeat(np.array([6, 255, 0, 0], dtype=np.uint8), 8)
    np.testing.assert_array_equal(seeds, np.broadcast_to(expected, (8, 32)))


def test_crf_seeds_combines_like_psa(monkeypatch: pytest.MonkeyPatch) -> None:
    """Low-alpha foreground, then high-alpha background over it, the rest unsure."""
    low = np.array([[0, 0, 4, 4, 6]], dtype=np.uint8)
    high = np.array([[0, 4, 0, 4, 4]], dtype=np.uint8)
    monkeypatch.setattr(
        seeds_module,
        "crf_label_map",
        lambda image, maps, classes, alpha, params: {4: low, 32: high}[alpha],
    )
    result = crf_seeds(np.zeros((1, 5, 3), np.uint8), np.zeros((2, 1, 5), np.float32), [3, 5])
    np.testing.assert_array_equal(result, [[0, 255, 0, 4, 6]])


def test_crf_seeds_edge_cases() -> None:
    image, maps = stripe_case()
    np.testing.assert_array_equal(crf_seeds(image, maps[:0], [], 4, 32), 0)
    with pytest.raises(ValueError, match="alpha_low"):
        crf_seeds(image, maps, [5], alpha_low=32, alpha_high=4)


# ----------------------------------------------------------------------------------------
# With a store on a tiny synthetic dataset

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeds") / "data"
    generate_dataset(root, NUM_CLASSES, image_size=48, num_train=5, num_val=1, seed=3)
    return root


def records_from_gt(root: Path, ids: list[str], off_value: float) -> list[CamRecord]:
    """Maps at image size: 1 on the class's ground-truth pixels, ``off_value`` elsewhere."""
    records = []
    for image_id in ids:
        gt = load_gt_mask(root, image_id)
        classes = [c for c in range(NUM_CLASSES) if (gt == c + 1).any()]
        maps = np.stack([np.where(gt == c + 1, 1.0, off_value) for c in classes])
        records.append(CamRecord(image_id, maps.astype(np.float32), classes, gt.shape))
    return records


def noisy_records(root: Path, ids: list[str], seed: int) -> list[CamRecord]:
    """Coarse random maps on a 6 x 6 grid for the classes of each image."""
    rng = np.random.default_rng(seed)
    records = []
    for image_id in ids:
        gt = load_gt_mask(root, image_id)
        classes = [c for c in range(NUM_CLASSES) if (gt == c + 1).any()]
        maps = rng.uniform(0, 1, (len(classes), 6, 6)).astype(np.float32)
        records.append(CamRecord(image_id, maps, classes, gt.shape))
    return records


@pytest.fixture(scope="module")
def noisy_store(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stores") / "noisy.h5"
    write_store(path, noisy_records(dataset, read_split(dataset, "train"), 0), "rollout")
    return path


@pytest.mark.parametrize(("mode", "values"), [("threshold", [0.2, 0.5, 0.7]), ("alpha", [1, 8])])
def test_sweep_equals_each_threshold_alone(
    dataset: Path, noisy_store: Path, mode: str, values: list[float]
) -> None:
    ids = read_split(dataset, "train")
    sweep = sweep_thresholds(noisy_store, dataset, ids, NUM_CLASSES + 1, values, mode)
    assert sorted(sweep) == sorted(values)
    with CamReader(noisy_store) as reader:
        for value in values:
            cm = ConfusionMatrix(NUM_CLASSES + 1)
            for image_id in ids:
                maps, classes = reader.upsampled(image_id)
                cm.update(seed_labels(maps, classes, mode, value), load_gt_mask(dataset, image_id))
            np.testing.assert_array_equal(sweep[value].matrix, cm.matrix)


def test_sweep_rejects_bad_arguments(dataset: Path, noisy_store: Path) -> None:
    ids = read_split(dataset, "train")
    with pytest.raises(ValueError, match="mode"):
        sweep_thresholds(noisy_store, dataset, ids, NUM_CLASSES + 1, [0.5], "gamma")
    with pytest.raises(ValueError, match="repeat"):
        sweep_thresholds(noisy_store, dataset, ids, NUM_CLASSES + 1, [0.5, 0.5])
    with pytest.raises(KeyError):
        sweep_thresholds(noisy_store, dataset, ["syn_999999"], NUM_CLASSES + 1, [0.5])


def run_eval_cams(
    store: Path, root: Path, out: Path, values: list[str], holdout_every: int = 0
) -> dict[str, pd.DataFrame]:
    cfg = {
        "mode": "threshold",
        "values": [float(v) for v in values],
        "holdout_every": holdout_every,
    }
    argv = [
        "--store", str(store), "--data-root", str(root), "--split", "train",
        "--config-json", json.dumps(cfg),
        "--out-csv", str(out / "cams.csv"), "--out-md", str(out / "cams.md"),
        "--out-sweep", str(out / "sweep.csv"), "--out-summary", str(out / "summary.csv"),
    ]  # fmt: skip
    assert load_script("cams_eval").main(argv) == 0
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("cams", "sweep", "summary")}


def test_eval_cams_cli_finds_the_separating_threshold(dataset: Path, tmp_path: Path) -> None:
    # maps are 1 on their objects and 0.4 elsewhere: any threshold in [0.4, 1) is perfect
    store = tmp_path / "oracle.h5"
    write_store(store, records_from_gt(dataset, read_split(dataset, "train"), 0.4), "oracle")
    tables = run_eval_cams(store, dataset, tmp_path, ["0.3", "0.5", "0.8"])
    sweep = tables["sweep"]
    assert list(sweep["threshold"]) == [0.3, 0.5, 0.8]
    assert sweep["mIoU"][0] < 100
    np.testing.assert_allclose(sweep["mIoU"][1:], 100.0)
    summary = tables["summary"].iloc[0]
    assert (summary["stage"], summary["method"], summary["split"]) == (
        "relevance map",
        "oracle",
        "train",
    )
    assert summary["threshold"] == 0.5
    assert summary["mIoU"] == pytest.approx(100.0)
    assert list(tables["cams"]["class"]) == ["background", *read_class_names(dataset)]
    np.testing.assert_allclose(tables["cams"]["IoU"], 100.0)
    assert (tmp_path / "cams.md").read_text().startswith("| class")


def test_eval_cams_cli_equals_library(dataset: Path, noisy_store: Path, tmp_path: Path) -> None:
    values = [0.2, 0.5, 0.7]
    tables = run_eval_cams(noisy_store, dataset, tmp_path, [str(v) for v in values])
    ids = read_split(dataset, "train")
    sweep = sweep_thresholds(noisy_store, dataset, ids, NUM_CLASSES + 1, values)
    np.testing.assert_allclose(
        tables["sweep"]["mIoU"], [100 * sweep[v].scores().miou for v in values]
    )
    best, cm = best_threshold(sweep)
    summary, per_class = stage_tables(
        cm, read_class_names(dataset), "relevance map", "rollout", "train", {"threshold": best}
    )
    for column in summary.columns:
        assert tables["summary"].loc[0, column] == pytest.approx(summary.loc[0, column])
    pd.testing.assert_frame_equal(tables["cams"], per_class)


def test_eval_cams_cli_holdout_is_chosen_apart_from_the_scored_images(
    dataset: Path, noisy_store: Path, tmp_path: Path
) -> None:
    values = [0.2, 0.5, 0.7]
    (tmp_path / "plain").mkdir()
    plain = run_eval_cams(noisy_store, dataset, tmp_path / "plain", [str(v) for v in values])
    tables = run_eval_cams(noisy_store, dataset, tmp_path, [str(v) for v in values], 3)
    # the sweep over all images is the same with or without the held-out part
    pd.testing.assert_frame_equal(tables["sweep"], plain["sweep"])
    for column in plain["summary"].columns:
        assert tables["summary"].loc[0, column] == plain["summary"].loc[0, column]
    ids = read_split(dataset, "train")
    held_ids, scored_ids = ids[::3], [i for k, i in enumerate(ids) if k % 3]
    held = sweep_thresholds(noisy_store, dataset, held_ids, NUM_CLASSES + 1, values)
    scored = sweep_thresholds(noisy_store, dataset, scored_ids, NUM_CLASSES + 1, values)
    chosen = best_threshold(held)[0]
    summary = tables["summary"].iloc[0]
    assert summary["holdout_threshold"] == chosen
    assert summary["holdout_mIoU"] == pytest.approx(100 * scored[chosen].scores().miou)
    merged = merge_sweeps(held, scored)
    np.testing.assert_allclose(
        tables["sweep"]["mIoU"], [100 * merged[v].scores().miou for v in values]
    )


def test_crf_seeds_cli_shards_cover_the_store(dataset: Path, tmp_path: Path) -> None:
    ids = read_split(dataset, "train")
    store = tmp_path / "oracle.h5"
    write_store(store, records_from_gt(dataset, ids, 0.0), "oracle")
    cfg = {"alpha_low": 4, "alpha_high": 32, "crf": {"bilateral_sxy": 20, "iterations": 5}}
    out = tmp_path / "seeds"
    for shard in range(2):
        argv = [
            "--store", str(store), "--data-root", str(dataset),
            "--shard", str(shard), "--num-shards", "2", "--config-json", json.dumps(cfg),
            "--out-dir", str(out),
        ]  # fmt: skip
        assert load_script("seeds_crf").main(argv) == 0
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(ids)
    assert not list(out.glob(".*"))  # no temporary files left behind

    params = CRFParams(bilateral_sxy=20, iterations=5)
    confident = correct = 0
    with CamReader(store) as reader:
        for image_id in ids:
            maps, classes = reader.upsampled(image_id)
            seeds = load_mask(out / f"{image_id}.png")
            expected = crf_seeds(load_image(dataset, image_id), maps, classes, 4, 32, params)
            np.testing.assert_array_equal(seeds, expected)
            assert set(np.unique(seeds)) <= {0, 255, *(c + 1 for c in classes)}
            gt = load_gt_mask(dataset, image_id)
            keep = (seeds != 255) & (gt != 255)
            confident += int(keep.sum())
            correct += int((seeds[keep] == gt[keep]).sum())
    # seeds from ground-truth-shaped maps are nearly all right where they are confident
    assert correct / confident > 0.95


def test_crf_seeds_cli_rejects_unknown_crf_key(
    dataset: Path, noisy_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--store", str(noisy_store), "--data-root", str(dataset),
        "--config-json", '{"alpha_low": 4, "alpha_high": 32, "crf": {"sxy": 3}}',
        "--out-dir", str(tmp_path / "seeds"),
    ]  # fmt: skip
    assert load_script("seeds_crf").main(argv) == 2
    assert "'sxy'" in capsys.readouterr().err
    assert not (tmp_path / "seeds").exists()
