"""Ground-truth affinities (label_features), the walk ceiling of a run, and its script."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from workflow_utils import load_script

from wsss_core.affinity.pairs import neighbour_offsets, offsets_inside, pair_affinities, pair_labels
from wsss_core.cams.store import CamReader
from wsss_core.data.layout import load_gt_mask, read_class_names, read_split
from wsss_core.data.palette import IGNORE_INDEX
from wsss_core.evaluate.metrics import ConfusionMatrix
from wsss_core.seeds.labels import alpha_labels
from wsss_core.walk.ceiling import (
    STAGES,
    ceiling_masks,
    ceiling_table,
    no_ground_truth_table,
)
from wsss_core.walk.walk import WalkParams, label_features, random_walk

# Three regions and a border band of unsure cells (255).
GRID = torch.tensor(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 3, 3, 255, 0, 0],
        [0, 3, 3, 255, 1, 1],
        [0, 0, 255, 1, 1, 1],
        [0, 0, 0, 1, 1, 1],
    ]
)


def test_label_features_give_one_within_a_label_and_zero_across():
    radius = 3
    aff = pair_affinities(label_features(GRID, GRID.shape), radius)
    # pair planes: same label (the unsure band counts as a label of its own) -> 1, else 0
    same = pair_labels(torch.where(GRID == IGNORE_INDEX, 7, GRID), radius)
    inside = aff > 0
    assert torch.all(aff[same.bg_pos | same.fg_pos] == 1)
    assert torch.equal(inside, same.bg_pos | same.fg_pos)  # float32: exp(-200) is exactly 0
    assert int(same.neg.sum()) > 0 and torch.all(aff[same.neg] == 0)
    assert aff.shape == (len(neighbour_offsets(radius)), *GRID.shape)


def test_label_features_pool_labels_to_the_grid_by_majority():
    labels = GRID.repeat_interleave(4, dim=0).repeat_interleave(4, dim=1)  # 20 x 24 pixels
    assert torch.equal(label_features(labels, GRID.shape), label_features(GRID, GRID.shape))
    one = label_features(torch.zeros(8, 8, dtype=torch.long), (4, 4))
    inside = offsets_inside(4, 4, neighbour_offsets(2))
    assert one.shape == (1, 4, 4) and torch.all(pair_affinities(one, 2)[inside] == 1)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        label_features(GRID[None], GRID.shape)


def test_walk_on_label_features_keeps_each_map_inside_its_region():
    feats = label_features(GRID, GRID.shape).double()
    region = {v: (GRID == v) for v in (0, 1, 3, IGNORE_INDEX)}
    # maps constant on every region are a fixed point of the walk
    values = {0: 0.2, 1: 0.9, 3: 0.5, IGNORE_INDEX: 0.0}
    flat = sum(v * region[k].double() for k, v in values.items())
    walked = random_walk(flat[None], feats, radius=3, beta=8, logt=6)[0]
    torch.testing.assert_close(walked, flat, rtol=1e-12, atol=1e-12)
    # a map on one region never leaks out, and spreads over all of it
    spot = torch.zeros(GRID.shape, dtype=torch.float64)
    spot[2, 2] = 1.0
    walked = random_walk(spot[None], feats, radius=3, beta=8, logt=8)[0]
    assert walked[~region[3]].abs().max() < 1e-60
    assert walked[region[3]].min() > 0.2  # four cells share the mass almost evenly


def test_ceiling_masks_spread_a_partial_map_over_its_object():
    gt = np.zeros((16, 16), dtype=np.uint8)
    gt[4:12, 4:12] = 2  # class index 1 -> label 2
    maps = np.zeros((1, 16, 16), dtype=np.float32)
    maps[0, 4:12, 4:9] = 1.0  # the map covers 5 of the object's 8 columns
    features = label_features(torch.from_numpy(gt), (16, 16))
    masks = ceiling_masks(maps, [1], gt, features, WalkParams(alpha=4, beta=8, logt=8, radius=3))
    assert list(masks) == list(STAGES)
    expected_relevance = np.zeros_like(gt)
    expected_relevance[4:12, 4:9] = 2
    assert np.array_equal(masks["relevance map"], expected_relevance)
    assert np.array_equal(masks["random walk, ground-truth affinity"], gt)
    assert np.array_equal(masks["random walk"], gt)  # the same features here
    with pytest.raises(ValueError, match="differ in size"):
        ceiling_masks(maps, [1], gt[:8], features, WalkParams(alpha=4))


def test_ceiling_masks_walk_as_walk_normalise_says():
    """The walk row follows walk.normalise: a 2 x 2 object with leaky features is lost by the
    raw walk and kept by the normalised one (tests/unit/walk/test_random_walk.py)."""
    gt = np.zeros((12, 12), dtype=np.uint8)
    gt[5:7, 5:7] = 1
    maps = (gt[None] == 1).astype(np.float32)
    features = torch.full((1, 12, 12), 0.5, dtype=torch.float64)
    features[:, 5:7, 5:7] = 0.0
    masks = {
        normalise: ceiling_masks(
            maps, [0], gt, features, WalkParams(alpha=4, beta=8, logt=4, radius=3,
                                                normalise=normalise)
        )["random walk"]
        for normalise in (False, True)
    }  # fmt: skip
    assert not masks[False].any()
    assert np.array_equal(masks[True], gt)


def test_ceiling_table_values():
    low, high = ConfusionMatrix(3), ConfusionMatrix(3)
    low.matrix[:] = [[3, 1, 0], [0, 2, 0], [0, 0, 0]]  # class 2 absent: NaN, left out of mIoU
    high.matrix[:] = [[4, 0, 0], [0, 2, 0], [0, 0, 0]]
    table = ceiling_table({"relevance map": low, "random walk": high}, ["cat", "dog"])
    assert list(table.columns) == ["stage", "mIoU", "background", "cat", "dog"]
    assert table["stage"].tolist() == ["relevance map", "random walk"]
    np.testing.assert_allclose(table["background"], [75.0, 100.0])
    np.testing.assert_allclose(table["cat"], [200 / 3, 100.0])
    np.testing.assert_allclose(table["mIoU"], [(75 + 200 / 3) / 2, 100.0])
    assert table["dog"].isna().all()


def test_no_ground_truth_table_has_the_rows_and_columns_of_a_scored_one():
    table = no_ground_truth_table(["cat", "dog"])
    assert list(table.columns) == ["stage", "mIoU", "background", "cat", "dog"]
    assert table["stage"].tolist() == list(STAGES)
    assert (table.iloc[:, 1:] == "no ground truth").all().all()


def test_walk_ceiling_script_rejects_a_non_positive_every(capsys):
    argv = ["--store", "s.h5", "--affinity", "a.pt", "--data-root", "d", "--split", "train"]
    argv += ["--device", "cpu"]
    walk = {"ceiling_every": 0, "alpha": 4, "beta": 8, "logt": 8, "radius": 5, "normalise": True}
    argv += ["--config-json", json.dumps(walk), "--out-csv", "t.csv", "--out-md", "t.md"]
    with pytest.raises(SystemExit) as info:
        load_script("walk_ceiling").parse_args(argv)
    assert info.value.code == 2
    assert "walk.ceiling_every must be a positive integer, got 0" in capsys.readouterr().err


def test_walk_ceiling_script_names_a_missing_config_key():
    """The scripts hold no defaults of config values: a key missing from --config-json is an
    error that names it (the schema's defaults fill it in a workflow run)."""
    argv = ["--store", "s.h5", "--affinity", "a.pt", "--data-root", "d", "--split", "train"]
    argv += ["--device", "cpu"]
    walk = {"ceiling_every": 1, "alpha": 4, "logt": 8, "radius": 5, "normalise": True}
    argv += ["--config-json", json.dumps(walk), "--out-csv", "t.csv", "--out-md", "t.md"]
    with pytest.raises(ValueError, match=r"--config-json lacks the config key\(s\) walk.beta"):
        load_script("walk_ceiling").parse_args(argv)


@pytest.mark.slow
def test_walk_ceiling_table_of_the_tiny_run(tiny_run):
    res, walk = tiny_run.results, tiny_run.config["walk"]
    for method in tiny_run.config["seeds"]["methods"]:
        table = pd.read_csv(res / f"tables/walk_ceiling_{method}.csv")
        assert table["stage"].tolist() == list(STAGES)
        assert table["mIoU"].between(0, 100).all()
        md = (res / f"tables/walk_ceiling_{method}.md").read_text().splitlines()
        assert md[0].startswith("| stage") and len(md) == 2 + len(STAGES)
        # the relevance-map row equals the seeds module's (numpy) alpha labels over the split,
        # up to float32 ties
        root = res / "data/synthetic"
        ids = read_split(root, tiny_run.config["data"]["train_split"])[:: walk["ceiling_every"]]
        cm = ConfusionMatrix(len(read_class_names(root)) + 1)
        with CamReader(res / f"cams/{method}.h5") as reader:
            for image_id in ids:
                maps, classes = reader.upsampled(image_id)
                cm.update(alpha_labels(maps, classes, walk["alpha"]), load_gt_mask(root, image_id))
        assert table["mIoU"][0] == pytest.approx(100 * cm.scores().miou, abs=0.01)
