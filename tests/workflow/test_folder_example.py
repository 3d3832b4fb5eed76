"""README's "Your own data" example, run end to end through Snakemake: its two commands exactly,
with fewer images and the tests' tiny network sizes (tests/configs/tiny.yaml, one relevance
method, one shard each), once with masks for both splits and once with no masks at all. The
tests are marked ``slow`` (about a minute each on 2 cores)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from workflow_utils import (
    REPO,
    TINY_CONFIG,
    WorkflowRun,
    copy_workflow,
    expected_job_counts,
    load_yaml,
    merge_config,
    output,
    read_ids,
    read_mask,
    run_config,
    snakemake,
    tail,
    write_config,
)

NO_GROUND_TRUTH = "no ground truth"
# the sizes of the tests: a few images, one relevance method, one shard per stage
SIZES = {
    "cams": {"methods": ["transformer_attribution"], "shards": 1},
    "seeds": {"shards": 1},
    "walk": {"shards": 1},
}
EXAMPLE_SIZES = ["--num-train", "12", "--num-val", "4"]


def readme_commands() -> list[str]:
    """The command lines of README's worked example (between its folder-example markers)."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- folder-example:start -->\n```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost its folder-example block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def run_readme_example(workdir: Path, masks: str) -> WorkflowRun:
    """Run README's commands in ``workdir``: the example folder (``--masks``, fewer images),
    then Snakemake with the tiny sizes in front of the README's config file."""
    sizes = write_config(workdir, "tests/configs/folder_sizes.yaml", SIZES)
    commands = readme_commands()
    assert [shlex.split(c)[0] for c in commands] == ["python", "snakemake"], commands
    make = shlex.split(commands[0])[1:] + EXAMPLE_SIZES + ["--masks", masks]
    made = subprocess.run(
        [sys.executable, *make], cwd=workdir, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    args = shlex.split(commands[1])[1:]
    at = args.index("--configfile") + 1
    configfile = args[at]
    args[at:at] = [TINY_CONFIG, sizes]  # the README's config file comes last: its keys win
    started = time.monotonic()
    proc = snakemake(workdir, *args)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        logs = sorted((workdir / "results").rglob("*.log"), key=lambda p: p.stat().st_mtime)
        detail = f"\n--- {logs[-1]}\n{tail(logs[-1].read_text())}" if logs else ""
        pytest.fail(f"folder example failed:\n{tail(output(proc))}{detail}")
    config = merge_config(run_config(workdir, TINY_CONFIG), load_yaml(workdir / sizes))
    config = merge_config(config, load_yaml(workdir / configfile))
    return WorkflowRun(workdir, configfile, config, output(proc), seconds)


@pytest.fixture(scope="module")
def with_masks(tmp_path_factory: pytest.TempPathFactory) -> WorkflowRun:
    return run_readme_example(copy_workflow(tmp_path_factory.mktemp("folder") / "wf"), "all")


@pytest.fixture(scope="module")
def without_masks(tmp_path_factory: pytest.TempPathFactory) -> WorkflowRun:
    return run_readme_example(copy_workflow(tmp_path_factory.mktemp("folder") / "wf"), "none")


def summary(run: WorkflowRun) -> pd.DataFrame:
    return pd.read_csv(run.results / "tables" / "summary.csv", dtype=str)


@pytest.mark.slow
def test_the_folder_becomes_the_dataset_of_every_stage(with_masks: WorkflowRun):
    """The run used the folder: its ids, its classes, its label tables (both formats), images
    at their own sizes, masks for every image."""
    res, folder = with_masks.results, with_masks.workdir / "data" / "my_data"
    assert with_masks.config["run"] == "folder_example"
    total = sum(expected_job_counts(with_masks.config).values())
    assert f"{total} of {total} steps (100%) done" in with_masks.log
    tree = res / "data" / "folder"
    classes = (folder / "classes.txt").read_text().split()
    assert (tree / "classes.txt").read_text().split() == classes
    for split in ("train", "val"):
        table = pd.read_csv(folder / f"{split}.csv", dtype=str)
        ids = table.iloc[:, 0].tolist()
        assert read_ids(tree / "ImageSets" / "Segmentation" / f"{split}.txt") == ids
        labels = pd.read_csv(res / "labels" / f"{split}.csv", dtype={"image_id": str})
        assert labels["image_id"].tolist() == ids
        assert list(labels.columns[1:]) == classes
        if split == "train":  # 0/1 columns in another order than classes.txt
            expected = table.set_index(table.columns[0])[classes].astype(int)
        else:  # a column of class names
            names = table.set_index(table.columns[0])["labels"].fillna("").str.split()
            expected = pd.DataFrame(
                [[int(c in n) for c in classes] for n in names], index=names.index, columns=classes
            )
        assert (labels.set_index("image_id")[classes].to_numpy() == expected.to_numpy()).all()
    sizes = {read_mask(p).shape for p in (res / "predictions").rglob("seg/*.png")}
    assert len(sizes) > 1, "the example's images should keep their many sizes"
    images = sorted(p.suffix for p in (folder / "images").iterdir())
    assert set(images) == {".png", ".jpg", ".bmp"}


@pytest.mark.slow
def test_with_masks_every_stage_is_scored(with_masks: WorkflowRun):
    table = summary(with_masks)
    assert set(table["stage"]) >= {"relevance map", "seeds", "random walk", "segmenter"}
    scores = pd.to_numeric(table["mIoU"], errors="coerce")
    assert scores.notna().all() and (scores > 0).all(), table
    assert NO_GROUND_TRUTH not in (with_masks.results / "tables" / "summary.md").read_text()


@pytest.mark.slow
def test_without_masks_every_stage_runs_and_says_no_ground_truth(without_masks: WorkflowRun):
    """No masks at all: every job ran, and every score cell of every table reads 'no ground
    truth' (summary, per-class, comparison, walk ceiling), in the terminal's summary too."""
    res = without_masks.results
    tree = res / "data" / "folder"
    assert (tree / "splits_without_masks.txt").read_text().split() == ["train", "val"]
    assert not (tree / "SegmentationClass").exists()
    assert "steps (100%) done" in without_masks.log
    table = summary(without_masks)
    assert len(table) == 6  # relevance map, seeds, walk x2, segmenter x2
    for column in ("mIoU", "mean_precision", "mean_recall", "pixel_accuracy"):
        assert (table[column] == NO_GROUND_TRUTH).all(), table
    per_class = pd.read_csv(res / "tables" / "summary_per_class.csv", dtype=str)
    assert (per_class.iloc[:, 1:] == NO_GROUND_TRUTH).all().all()
    ceiling = pd.read_csv(res / "tables" / "walk_ceiling_transformer_attribution.csv", dtype=str)
    assert (ceiling.iloc[:, 1:] == NO_GROUND_TRUTH).all().all()
    comparison = pd.read_csv(res / "tables" / "cams_comparison.csv", dtype=str)
    assert (comparison["mIoU"] == NO_GROUND_TRUTH).all()
    assert NO_GROUND_TRUTH in (res / "tables" / "summary.md").read_text()
    assert f"| {NO_GROUND_TRUTH} |" in without_masks.log
    # the stages still made their masks: seeds, walk, predictions for every image
    train = read_ids(tree / "ImageSets" / "Segmentation" / "train.txt")
    val = read_ids(tree / "ImageSets" / "Segmentation" / "val.txt")
    assert {p.stem for p in (res / "walk" / "transformer_attribution" / "rw").glob("*.png")} == set(
        train
    )
    assert {
        p.stem for p in (res / "predictions" / "transformer_attribution" / "seg").glob("*.png")
    } == set(val)
