"""The COCO preset, run for real: configs/coco2014_vit_b16.yaml from download_coco to the report.

The three COCO 2014 archives, in miniature (tests/support/coco_miniature.py: polygons, both
kinds of RLE, crowd regions, overlapping objects, images without annotations), are served on
a loopback HTTP server; the workflow runs with the preset itself plus an overrides file that
changes only sizes (tests/support/preset_runs.py, as the VOC preset's test) and the URLs and
checksums: downloads, extraction, the conversion in two convert_coco shards, prepare_coco,
labels from the annotations, and every stage to the summary.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from coco_miniature import CocoMiniature, coco_zips, md5
from http_server import RangeServer
from preset_runs import SIZES, preset_run_config, run_workflow, weights_files
from workflow_utils import (
    COCO_PRESET,
    copy_workflow,
    load_yaml,
    merge_config,
    output,
    read_ids,
    read_mask,
    snakemake,
    tail,
)

from wsss_core.data.coco import COCO_CLASSES

pytestmark = pytest.mark.slow

MINI = CocoMiniature(num_train=12, num_val=6)
ARCHIVES = ("train2014", "val2014", "annotations_trainval2014")
KEYS = {"train2014": "train", "val2014": "val", "annotations_trainval2014": "annotations"}
COCO_SIZES = {"data.coco2014.shards": 2}


@dataclass(frozen=True)
class COCORun:
    workdir: Path
    configfiles: list[str]
    config: dict[str, Any]
    log: str
    seconds: float

    @property
    def results(self) -> Path:
        return self.workdir / "results" / self.config["run"]

    @property
    def root(self) -> Path:
        return self.workdir / self.config["data"]["coco2014"]["root"]


def source_overrides(server: RangeServer, zips: dict[str, Path]) -> dict[str, str]:
    overrides = {}
    for archive in ARCHIVES:
        overrides[f"data.coco2014.{KEYS[archive]}_url"] = server.url(f"/coco/{archive}.zip")
        overrides[f"data.coco2014.{KEYS[archive]}_md5"] = md5(zips[archive])
    return overrides


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory: pytest.TempPathFactory) -> COCORun:
    """The preset run from the downloads to the summary and the report, once per module."""
    tmp = tmp_path_factory.mktemp("coco_preset")
    zips = coco_zips(tmp / "server", MINI)
    workdir = copy_workflow(tmp / "workflow")
    files = {f"/coco/{name}.zip": zips[name].read_bytes() for name in ARCHIVES}
    with RangeServer(files) as server:
        overrides = {
            **COCO_SIZES,
            **source_overrides(server, zips),
            **weights_files(tmp / "weights"),
        }
        configfiles, config = preset_run_config(workdir, overrides, COCO_PRESET)
        log, seconds = run_workflow(workdir, configfiles)
        assert {r["path"] for r in server.requests} == set(files)
    print(f"\nCOCO preset, download to summary: {seconds:.0f} s")
    return COCORun(workdir, configfiles, config, log, seconds)


def test_the_preset_is_the_preset_but_for_sizes_and_sources(coco_run: COCORun):
    preset = merge_config(
        load_yaml(coco_run.workdir / "config.yaml"), load_yaml(coco_run.workdir / COCO_PRESET)
    )
    changed = set()

    def walk(a, b, prefix=""):
        for key in set(a) | set(b):
            x, y = a.get(key), b.get(key)
            if isinstance(x, dict) and isinstance(y, dict):
                walk(x, y, f"{prefix}{key}.")
            elif x != y:
                changed.add(f"{prefix}{key}")

    walk(preset, coco_run.config)
    changed = {k for k in changed if not k.startswith("resources.")}
    sources = {f"data.coco2014.{KEYS[a]}_{kind}" for a in ARCHIVES for kind in ("url", "md5")}
    allowed = set(SIZES) | set(COCO_SIZES) | sources
    allowed |= {"classifier.pretrained", "segmenter.net.pretrained"}
    assert changed <= allowed
    data = coco_run.config["data"]
    assert (data["source"], data["train_split"], data["eval_split"]) == ("coco2014", "train", "val")
    assert data["label_source"] == "xml"
    assert len(coco_run.config["cams"]["methods"]) == 6


def test_the_tree_holds_the_hand_made_masks(coco_run: COCORun):
    """Split lists of the annotated images, masks equal to the hand-made ones, images as hard
    links to the extracted archive, the 80 class names; the shard folders are gone."""
    root = coco_run.root
    assert read_ids(root / "ImageSets/Segmentation/train.txt") == MINI.ids("train")
    assert read_ids(root / "ImageSets/Segmentation/val.txt") == MINI.ids("val")
    assert read_ids(root / "classes.txt") == list(COCO_CLASSES)
    assert sorted(p.stem for p in (root / "SegmentationClass").glob("*.png")) == MINI.all_ids
    for stem in MINI.all_ids:
        np.testing.assert_array_equal(
            read_mask(root / "SegmentationClass" / f"{stem}.png"), MINI.expected_mask(stem), stem
        )
        folder = "train2014" if "train2014" in stem else "val2014"
        extracted = root.parent / "coco2014_extracted" / folder / f"{stem}.jpg"
        assert os.path.samefile(root / "JPEGImages" / f"{stem}.jpg", extracted)
    assert sorted(p.stem for p in (root / "JPEGImages").iterdir()) == MINI.all_ids
    assert not (root.parent / "coco2014_extracted" / "shards").exists()
    downloads = coco_run.workdir / coco_run.config["data"]["coco2014"]["downloads"]
    assert sorted(p.name for p in downloads.iterdir()) == sorted(f"{a}.zip" for a in ARCHIVES)
    assert "convert_coco" in coco_run.log and "prepare_coco" in coco_run.log


def test_label_tables_are_the_annotated_categories(coco_run: COCORun):
    """Crowd categories count: some image has a label that its mask does not show."""
    shown_only_as_crowd = 0
    for split in ("train", "val"):
        table = pd.read_csv(coco_run.results / "labels" / f"{split}.csv")
        assert list(table.columns) == ["image_id", *COCO_CLASSES]
        assert list(table["image_id"]) == MINI.ids(split)
        assert table[list(COCO_CLASSES)].to_numpy().tolist() == MINI.label_rows(MINI.ids(split))
        for stem in MINI.ids(split):
            shown = set(np.unique(MINI.expected_mask(stem))) - {0, 255}
            shown_only_as_crowd += len(set(MINI.labels(stem)) - shown)
    assert shown_only_as_crowd > 0


def test_summary_has_a_row_per_stage_and_class(coco_run: COCORun):
    config = coco_run.config
    summary = pd.read_csv(coco_run.results / "tables" / "summary.csv")
    seg = config["segmenter"]["pseudo_method"]
    rows = [("relevance map", m) for m in config["cams"]["methods"]]
    for m in config["seeds"]["methods"]:
        rows += [(stage, m) for stage in ("seeds", "random walk", "random walk + CRF")]
    rows += [("segmenter", seg), ("segmenter + CRF", seg)]
    assert list(summary[["stage", "method"]].itertuples(index=False, name=None)) == rows
    scores = summary[["mIoU", "mean_precision", "mean_recall", "pixel_accuracy"]]
    assert scores.notna().all().all() and ((scores >= 0) & (scores <= 100)).all().all()
    per_class = pd.read_csv(coco_run.results / "tables" / "summary_per_class.csv")
    assert list(per_class["class"]) == ["background", *COCO_CLASSES]


def test_a_second_run_has_nothing_to_do(coco_run: COCORun):
    """The tree is up to date although the shard folders it came from are gone (temp)."""
    proc = snakemake(coco_run.workdir, "-n", "--configfile", *coco_run.configfiles, timeout=300)
    assert proc.returncode == 0, tail(output(proc))
    assert "Nothing to be done" in output(proc), tail(output(proc))


def test_an_unsafe_zip_stops_with_one_line(tmp_path):
    """An annotation zip with a ``../`` member, served with its checksum, stops extract_coco
    with one line naming the member; nothing is written outside, no folder is left."""
    zips = coco_zips(tmp_path / "server", CocoMiniature(num_train=1, num_val=1))
    evil = zips["annotations_trainval2014"]
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("annotations/../../../../escaped.txt", "x")
    workdir = copy_workflow(tmp_path / "workflow")
    files = {f"/coco/{name}.zip": zips[name].read_bytes() for name in ARCHIVES}
    with RangeServer(files) as server:
        overrides = source_overrides(server, zips)
        configfiles, config = preset_run_config(workdir, overrides, COCO_PRESET)
        target = Path(config["data"]["coco2014"]["root"]).parent / "coco2014_extracted"
        target = str(target / "annotations_trainval2014")
        proc = snakemake(workdir, "--cores", "1", "--configfile", *configfiles, "--", target)
    assert proc.returncode != 0
    errors = [line for line in output(proc).splitlines() if line.startswith("data_extract: error:")]
    assert len(errors) == 1, tail(output(proc))
    assert "refusing member 'annotations/../../../../escaped.txt'" in errors[0]
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (workdir / target).exists()
