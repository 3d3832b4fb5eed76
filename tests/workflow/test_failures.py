"""Every expected failure is one line in the terminal, through Snakemake itself.

- Start-up checks (dry runs, nothing runs): a plain ViT's input sizes against its patch size,
  a prepared VOC tree's folders, a writable results folder. Snakemake stops while parsing,
  with one line that names the config key.
- Run-time failures (on a copy of the finished tiny run, marked slow): one input is corrupted,
  then the one rule that reads it is rerun. The script's one line ``<script>: error: ...``
  names the file and says what to do; there is no traceback; what upstream rules computed is
  still there, unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest
from workflow_utils import (
    TINY_CONFIG,
    copy_workflow,
    load_yaml,
    output,
    read_ids,
    snakemake,
    tail,
    with_values,
    write_config,
)

from wsss_core.data.palette import load_mask, save_mask

# ============================================================ start-up checks (dry runs)


@pytest.fixture(scope="module")
def dry_workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("failures_dry") / "workflow")


def _prepared_tree(root: Path, folders: tuple[str, ...], splits=("train", "val")) -> Path:
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split in splits:
        (lists / f"{split}.txt").write_text("2007_000033\n")
    for name in folders:
        (root / name).mkdir()
    return root


def _prepared(root: Path, **more) -> dict:
    return {
        "data.source": "voc2012",
        "data.voc2012.prepared": True,
        "data.voc2012.root": str(root),
        **more,
    }


VIT = {"classifier.backbone": "vit_tiny_patch16_224", "classifier.patch_size": None}
STARTUP = {
    # id: (folders of a prepared tree or None, changes to the tiny config, the one line)
    "vit_img_size_not_a_patch_multiple": (
        None,
        {**VIT, "classifier.img_size": 100},
        "config key classifier.img_size: 100 is not a multiple of the patch size 16 of "
        "classifier.backbone vit_tiny_patch16_224 (classifier.patch_size); use 96 or 112",
    ),
    "vit_patch_size_key_is_used": (
        None,
        {**VIT, "classifier.patch_size": 32, "classifier.img_size": 64 + 16},
        "config key classifier.img_size: 80 is not a multiple of the patch size 32",
    ),
    "affinity_crop_not_a_patch_multiple": (
        None,
        {**VIT, "classifier.img_size": 96, "affinity.net.crop_size": 50},
        "config key affinity.net.crop_size: 50 is not a multiple of the patch size 16",
    ),
    "prepared_tree_without_images": (
        ("SegmentationClass",),
        {},
        "config key data.voc2012.root: {root}/JPEGImages is missing; complete the prepared "
        "tree data.voc2012.root",
    ),
    "prepared_tree_without_masks": (
        ("JPEGImages", "Annotations"),
        {},
        "config key data.train_split: split 'train' needs its masks in "
        "{root}/SegmentationClass or {root}/SegmentationClassAug, which is missing",
    ),
    "prepared_train_aug_without_aug_masks": (
        ("JPEGImages", "SegmentationClass"),
        {"data.train_split": "train_aug"},
        "config key data.train_split: split 'train_aug' needs its masks in "
        "{root}/SegmentationClassAug, which is missing",
    ),
    "prepared_tree_without_class_names": (
        ("JPEGImages", "SegmentationClassAug"),
        {},
        "config key data.voc2012.root: {root}/classes.txt is missing",
    ),
}


def _stops_with_one_line(proc, line: str) -> None:
    text = output(proc)
    assert proc.returncode != 0, tail(text)
    assert sum(line in row for row in text.splitlines()) == 1, tail(text)
    assert "Traceback" not in text
    assert "Building DAG of jobs" not in text  # stopped while parsing: nothing ran


@pytest.mark.parametrize("case", STARTUP, ids=list(STARTUP))
def test_startup_check_stops_the_dry_run(case, dry_workdir, tmp_path):
    folders, changes, line = STARTUP[case]
    root = tmp_path / "VOC2012"
    splits = ("train", "val", "train_aug")
    if folders is not None:
        changes = {**_prepared(_prepared_tree(root, folders, splits)), **changes}
    config = with_values(load_yaml(dry_workdir / TINY_CONFIG), changes)
    configfile = write_config(dry_workdir, f"startup/{case}.yaml", config)
    proc = snakemake(dry_workdir, "-n", "--configfile", configfile, timeout=120)
    _stops_with_one_line(proc, line.format(root=root))


def test_a_complete_prepared_tree_passes(dry_workdir, tmp_path):
    root = _prepared_tree(tmp_path / "VOC2012", ("JPEGImages", "SegmentationClass"))
    config = with_values(load_yaml(dry_workdir / TINY_CONFIG), _prepared(root))
    configfile = write_config(dry_workdir, "startup/complete_tree.yaml", config)
    proc = snakemake(dry_workdir, "-n", "--configfile", configfile, timeout=120)
    assert proc.returncode == 0, tail(output(proc))


def test_unwritable_results_stop_the_dry_run(tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / "results").write_text("a file where the results folder goes\n")
    proc = snakemake(workdir, "-n", "--configfile", TINY_CONFIG, timeout=120)
    _stops_with_one_line(
        proc,
        "results/tiny is not writable (results is not a folder); fix its permissions or "
        "choose another run name (config key run)",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_stop_the_dry_run(tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / "results" / "tiny").mkdir(parents=True)
    (workdir / "results" / "tiny").chmod(0o555)
    try:
        proc = snakemake(workdir, "-n", "--configfile", TINY_CONFIG, timeout=120)
    finally:
        (workdir / "results" / "tiny").chmod(0o755)
    _stops_with_one_line(proc, "results/tiny is not writable (no write permission on results/tiny)")


# ============================================================ run-time failures (tiny run)

METHOD = "transformer_attribution"  # the tiny config's pseudo-mask method
DATA = "data/synthetic"


def _truncate_first_train_image(res: Path) -> str:
    """The first id of the store's sorted ids: crf_seeds shard 1-of-2 reads it."""
    image_id = sorted(read_ids(res / DATA / "ImageSets/Segmentation/train.txt"))[0]
    path = res / DATA / "JPEGImages" / f"{image_id}.jpg"
    path.write_bytes(path.read_bytes()[:200])
    return image_id


def _drop_an_image_from_the_store(res: Path) -> str:
    with h5py.File(res / "cams" / f"{METHOD}.h5", "a") as h5:
        image_id = sorted(h5)[-1]
        del h5[image_id]
    return image_id


def _label_77_in_a_val_mask(res: Path) -> str:
    image_id = read_ids(res / DATA / "ImageSets/Segmentation/val.txt")[0]
    path = res / DATA / "SegmentationClass" / f"{image_id}.png"
    mask = load_mask(path)
    mask[:2, :2] = 77
    save_mask(path, mask)
    return image_id


def _truncate_the_segmenter(res: Path) -> str:
    path = res / "segmenter" / METHOD / "segmenter.pt"
    path.write_bytes(path.read_bytes()[:100])
    return path.name


RUNTIME: dict[str, tuple[Callable[[Path], str], str, str, str, tuple[str, ...]]] = {
    # id: (corrupt, rule, target under results/<run>, the line: a regex with {id} the image
    # id, the outputs of the failing job: Snakemake removes them, forced or failed)
    "truncated_image": (
        _truncate_first_train_image,
        "crf_seeds",
        f"seeds/shards/{METHOD}/1-of-2",
        r"seeds_crf: error: cannot read image \S*/JPEGImages/{id}\.jpg: it is unreadable "
        r"\(.*\); replace it .* or remove '{id}' from the split lists in "
        r"\S*ImageSets/Segmentation and rerun",
        (f"seeds/shards/{METHOD}/1-of-2/",),
    ),
    "store_missing_an_image": (
        _drop_an_image_from_the_store,
        "eval_cams",
        f"tables/cams_{METHOD}_summary.csv",
        rf"cams_eval: error: image id '{{id}}' is not in cam store \S*cams/{METHOD}\.h5; .*"
        r"rerun extract_cams and gather_cams",
        tuple(
            f"tables/cams_{METHOD}{end}" for end in (".csv", ".md", "_sweep.csv", "_summary.csv")
        ),
    ),
    "mask_with_unknown_label": (
        _label_77_in_a_val_mask,
        "eval_segmenter",
        f"tables/segmenter_{METHOD}_seg_summary.csv",
        r"evaluate_masks: error: mask \S*/SegmentationClass/{id}\.png holds label\(s\) \[77\] that "
        r"are neither a class .*; fix or replace the mask, or correct classes\.txt",
        tuple(f"tables/segmenter_{METHOD}_seg{end}" for end in (".csv", ".md", "_summary.csv")),
    ),
    "unreadable_segmenter": (
        _truncate_the_segmenter,
        "predict_segmenter",
        f"predictions/{METHOD}/seg",
        rf"segmenter_predict: error: segmenter file \S*segmenter/{METHOD}/segmenter\.pt is "
        r"unreadable \(.*\); delete it and rerun the train_segmenter rule",
        (f"predictions/{METHOD}/",),
    ),
}


def _files(res: Path) -> dict[str, int]:
    """{relative path: mtime} of what the run computed (logs and benchmarks left out)."""
    return {
        str(p.relative_to(res)): p.stat().st_mtime_ns
        for p in res.rglob("*")
        if p.is_file() and not str(p.relative_to(res)).startswith(("logs/", "benchmarks/"))
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", RUNTIME, ids=list(RUNTIME))
def test_runtime_failure_is_one_line_and_keeps_what_was_computed(case, tiny_run, tmp_path):
    corrupt, rule, target, pattern, own = RUNTIME[case]
    workdir = tmp_path / "workflow"
    shutil.copytree(tiny_run.workdir, workdir, symlinks=True)
    res = workdir / "results" / tiny_run.config["run"]
    image_id = corrupt(res)
    before = {k: v for k, v in _files(res).items() if not k.startswith(own)}
    proc = snakemake(  # the target first: --forcerun and --allowed-rules take lists
        workdir, f"results/{tiny_run.config['run']}/{target}", "--cores", "2",
        "--configfile", tiny_run.configfile, "--forcerun", rule, "--allowed-rules", rule,
        timeout=600,
    )  # fmt: skip
    text = output(proc)
    assert proc.returncode != 0, tail(text)
    script = pattern.split(":", 1)[0]
    lines = [row for row in text.splitlines() if f"{script}: error:" in row]
    assert len(lines) == 1, tail(text)
    line = lines[0].rsplit("\r", 1)[-1]  # what a terminal shows after a progress bar's \r
    assert re.fullmatch(pattern.format(id=re.escape(image_id)), line), line
    assert "Traceback" not in text
    assert f"Error in rule {rule}" in text  # Snakemake's failure summary, beside the line
    after = _files(res)
    lost = sorted(k for k in before if k not in after)
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    assert not lost and not changed, (lost, changed)
