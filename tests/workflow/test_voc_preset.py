"""The VOC preset, run for real: configs/voc2012_vit_b16.yaml from download_voc to the report.

A miniature but faithful VOC 2012 archive and SBD benchmark.tgz (tests/support/voc_miniature.py) are
served on a loopback HTTP server; the workflow runs with the preset itself plus an overrides
file that changes only sizes (image counts, backbones, epochs, batches, crops, shards,
resources) and the URLs and checksums. The backbones start from weights FILES made here
(timm models built with pretrained=False), the route of an offline cluster. A second run
points ``data.voc2012.root`` at the tree the first one prepared, with ``prepared: true``.
"""

from __future__ import annotations

import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from http_server import RangeServer
from safetensors.torch import save_file
from voc_miniature import Miniature, md5, sbd_tgz, voc_tar
from workflow_utils import (
    VOC_PRESET,
    copy_workflow,
    load_yaml,
    merge_config,
    output,
    read_ids,
    read_mask,
    snakemake,
    tail,
    with_values,
    write_config,
)

from wsss_core.data.voc import VOC_CLASSES

pytestmark = pytest.mark.slow

MINI = Miniature(
    voc_train=(
        "2007_000032", "2007_000039", "2007_000063", "2007_000068", "2007_000121",
        "2007_000170", "2007_000241", "2007_000243", "2007_000250", "2007_000256",
        "2007_000333", "2007_000363",
    ),
    voc_val=(
        "2007_000033", "2007_000042", "2007_000061", "2007_000123", "2007_000129",
        "2007_000175",
    ),
    # SBD lists hold VOC train ids (VOC's masks win), VOC val ids (left out of train_aug) and
    # ids of their own
    sbd_train=("2007_000039", "2007_000042", "2008_000002", "2008_000003", "2008_000007"),
    sbd_val=("2007_000063", "2007_000123", "2008_000008"),
    detection_only=("2008_000016", "2008_000019"),
)  # fmt: skip
SBD_ONLY = ["2008_000002", "2008_000003", "2008_000007", "2008_000008"]
# (SBD train + SBD val + VOC train) - VOC val, by hand
EXPECTED_TRAIN_AUG = sorted([*MINI.voc_train, *SBD_ONLY])

# Everything the test changes in the preset: sizes and where the archives are.
SIZES = {
    "classifier.backbone": "vit_tiny_patch16_224",
    "classifier.img_size": 64,
    "classifier.batch_size": 8,
    "classifier.epochs": 1,
    "classifier.num_workers": 0,
    "cams.shards": 2,
    "seeds.shards": 2,
    "affinity.net.epochs": 1,
    "affinity.net.batch_size": 8,
    "affinity.net.crop_size": 64,
    "affinity.net.num_workers": 0,
    "walk.shards": 2,
    "segmenter.net.backbone": "resnet10t",
    "segmenter.net.aspp_channels": 32,
    "segmenter.net.decoder_channels": 32,
    "segmenter.net.low_level_channels": 16,
    "segmenter.net.epochs": 1,
    "segmenter.net.batch_size": 8,
    "segmenter.net.crop_size": 64,
    "segmenter.net.num_workers": 0,
    "resources.threads": 1,
    "resources.gpus_per_job": 0,
    "resources.default_mem_mb": 1000,
    "resources.default_runtime": 10,
}


@dataclass(frozen=True)
class VOCRun:
    workdir: Path
    configfiles: list[str]
    config: dict[str, Any]
    log: str
    seconds: float

    @property
    def results(self) -> Path:
        return self.workdir / "results" / self.config["run"]

    @property
    def voc_root(self) -> Path:
        return self.workdir / self.config["data"]["voc2012"]["root"]


def weights_files(folder: Path) -> dict[str, str]:
    """The backbones' "ImageNet" weights as files, built by timm without downloading."""
    folder.mkdir(parents=True, exist_ok=True)
    vit = folder / "vit_tiny_patch16_224.safetensors"
    save_file(timm.create_model(SIZES["classifier.backbone"], pretrained=False).state_dict(), vit)
    cnn = folder / "resnet10t.pth"
    torch.save(
        timm.create_model(SIZES["segmenter.net.backbone"], pretrained=False).state_dict(), cnn
    )
    return {"classifier.pretrained": str(vit), "segmenter.net.pretrained": str(cnn)}


def preset_run_config(workdir: Path, overrides: dict[str, Any]) -> tuple[list[str], dict]:
    """The preset and an overrides file beside it: the --configfile list and the merged config."""
    resources = {
        f"resources.rules.{rule}": {"mem_mb": 1000, "runtime": 10}
        for rule in load_yaml(workdir / VOC_PRESET)["resources"]["rules"]
    }
    override = with_values({}, {**SIZES, **resources, **overrides})
    files = [VOC_PRESET, write_config(workdir, "voc_test_overrides.yaml", override)]
    config = load_yaml(workdir / "config.yaml")
    for name in files:
        config = merge_config(config, load_yaml(workdir / name))
    return files, config


def run_workflow(workdir: Path, configfiles: list[str], *targets: str) -> tuple[str, float]:
    started = time.monotonic()
    proc = snakemake(
        workdir, "--cores", "2", "--configfile", *configfiles, "--", *targets, timeout=900
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        logs = sorted(workdir.rglob("*.log"), key=lambda p: p.stat().st_mtime)
        detail = f"\n--- {logs[-1]}\n{tail(logs[-1].read_text())}" if logs else ""
        pytest.fail(f"workflow failed (exit {proc.returncode}):\n{tail(output(proc))}{detail}")
    return output(proc), seconds


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory: pytest.TempPathFactory) -> VOCRun:
    """The preset run from the downloads to the summary and the report, once per module."""
    tmp = tmp_path_factory.mktemp("voc_preset")
    archives = tmp / "server"
    archives.mkdir()
    voc, sbd = voc_tar(archives / "VOC.tar", MINI), sbd_tgz(archives / "SBD.tgz", MINI)
    workdir = copy_workflow(tmp / "workflow")
    files = {
        "/voc/VOCtrainval_11-May-2012.tar": voc.read_bytes(),
        "/sbd/benchmark.tgz": sbd.read_bytes(),
    }
    with RangeServer(files) as server:
        overrides = {
            "data.voc2012.voc_url": server.url("/voc/VOCtrainval_11-May-2012.tar"),
            "data.voc2012.voc_md5": md5(voc),
            "data.voc2012.sbd_url": server.url("/sbd/benchmark.tgz"),
            "data.voc2012.sbd_md5": md5(sbd),
            **weights_files(tmp / "weights"),
        }
        configfiles, config = preset_run_config(workdir, overrides)
        log, seconds = run_workflow(workdir, configfiles)
        assert {r["path"] for r in server.requests} == set(files)
    print(f"\nVOC preset, download to summary: {seconds:.0f} s")
    return VOCRun(workdir, configfiles, config, log, seconds)


def test_the_preset_is_the_preset_but_for_sizes_and_sources(voc_run: VOCRun):
    """Only sizes, weights files, resources and the archives' URLs and checksums differ."""
    preset = merge_config(
        load_yaml(voc_run.workdir / "config.yaml"), load_yaml(voc_run.workdir / VOC_PRESET)
    )
    changed = set()

    def walk(a, b, prefix=""):
        for key in set(a) | set(b):
            x, y = a.get(key), b.get(key)
            if isinstance(x, dict) and isinstance(y, dict):
                walk(x, y, f"{prefix}{key}.")
            elif x != y:
                changed.add(f"{prefix}{key}")

    walk(preset, voc_run.config)
    changed = {k for k in changed if not k.startswith("resources.")}
    allowed = set(SIZES) | {
        "classifier.pretrained", "segmenter.net.pretrained", "data.voc2012.voc_url",
        "data.voc2012.voc_md5", "data.voc2012.sbd_url", "data.voc2012.sbd_md5",
    }  # fmt: skip
    assert changed <= allowed
    assert (
        voc_run.config["cams"]["scales"] == [1.0, 0.5, 1.5, 2.0] and voc_run.config["cams"]["flip"]
    )
    assert len(voc_run.config["cams"]["methods"]) == 6
    assert voc_run.config["segmenter"]["pseudo_masks"] == "rw"


def test_train_aug_and_its_masks_are_exact(voc_run: VOCRun):
    """train_aug.txt lists exactly (SBD train + SBD val + VOC train) - VOC val; every id of it
    (and of VOC train and val) has a palette PNG whose labels are VOC's mask where VOC has one,
    else the SBD .mat's; only VOCdevkit/VOC2012 and benchmark_RELEASE/dataset are extracted."""
    root = voc_run.voc_root
    assert read_ids(root / "ImageSets/Segmentation/train_aug.txt") == EXPECTED_TRAIN_AUG
    assert read_ids(root / "classes.txt") == list(VOC_CLASSES)
    aug = root / "SegmentationClassAug"
    expected_ids = sorted({*EXPECTED_TRAIN_AUG, *MINI.voc_val})
    assert sorted(p.stem for p in aug.glob("*.png")) == expected_ids
    for image_id in expected_ids:
        want = MINI.sbd_mask(image_id) if image_id in SBD_ONLY else MINI.voc_mask(image_id)
        np.testing.assert_array_equal(read_mask(aug / f"{image_id}.png"), want, err_msg=image_id)
    # VOC's own tree is there as the archive holds it; the SBD tree beside it
    assert sorted(p.stem for p in (root / "JPEGImages").glob("*.jpg")) == MINI.all_ids
    assert (root / "Annotations").is_dir() and (root / "ImageSets/Main/cat_train.txt").is_file()
    assert not (root.parent / "devkit_doc.txt").exists()
    sbd = root.parent / "SBD"
    assert {p.name for p in sbd.iterdir()} >= {"cls", "inst", "img", "train.txt", "val.txt"}
    downloads = voc_run.workdir / voc_run.config["data"]["voc2012"]["downloads"]
    assert sorted(p.name for p in downloads.iterdir()) == [
        "VOCtrainval_11-May-2012.tar",
        "benchmark.tgz",
    ]


def test_label_tables_equal_the_drawn_objects(voc_run: VOCRun):
    for split, ids in (("train_aug", EXPECTED_TRAIN_AUG), ("val", list(MINI.voc_val))):
        table = pd.read_csv(voc_run.results / "labels" / f"{split}.csv")
        assert list(table.columns) == ["image_id", *VOC_CLASSES]
        assert list(table["image_id"]) == ids
        assert table[list(VOC_CLASSES)].to_numpy().tolist() == MINI.label_rows(ids), split


def test_summary_has_a_row_per_stage(voc_run: VOCRun):
    config = voc_run.config
    summary = pd.read_csv(voc_run.results / "tables" / "summary.csv")
    seg = config["segmenter"]["pseudo_method"]
    rows = [("relevance map", m) for m in config["cams"]["methods"]]
    for m in config["seeds"]["methods"]:
        rows += [(stage, m) for stage in ("seeds", "random walk", "random walk + CRF")]
    rows += [("segmenter", seg), ("segmenter + CRF", seg)]
    assert list(summary[["stage", "method"]].itertuples(index=False, name=None)) == rows
    scores = summary[["mIoU", "mean_precision", "mean_recall", "pixel_accuracy"]]
    assert scores.notna().all().all() and ((scores >= 0) & (scores <= 100)).all().all()
    per_class = pd.read_csv(voc_run.results / "tables" / "summary_per_class.csv")
    assert list(per_class["class"]) == ["background", *VOC_CLASSES]


def test_a_second_run_has_nothing_to_do(voc_run: VOCRun):
    """The prepared tree is one directory output; it and everything after it are up to date."""
    proc = snakemake(voc_run.workdir, "-n", "--configfile", *voc_run.configfiles, timeout=300)
    assert proc.returncode == 0, tail(output(proc))
    assert "Nothing to be done" in output(proc), tail(output(proc))


def test_report_names_the_run(voc_run: VOCRun, tmp_path):
    report = tmp_path / "report.html"
    proc = snakemake(
        voc_run.workdir, "--configfile", *voc_run.configfiles, "--report", str(report), timeout=300
    )
    assert proc.returncode == 0, tail(output(proc))
    assert f"wsss run <strong>{voc_run.config['run']}</strong>" in report.read_text()


def test_a_prepared_tree_runs_offline(voc_run: VOCRun, tmp_path):
    """``data.voc2012.prepared: true`` with root at the tree the preset run prepared: nothing is
    downloaded or extracted (the URLs lead nowhere), the classifier trains from its weights
    file, the relevance maps are extracted and scored."""
    workdir = copy_workflow(tmp_path / "workflow")
    overrides = {
        "data.voc2012.prepared": True,
        "data.voc2012.root": str(voc_run.voc_root),
        "data.voc2012.voc_url": "http://127.0.0.1:9/nowhere.tar",
        "data.voc2012.sbd_url": "http://127.0.0.1:9/nowhere.tgz",
        "classifier.pretrained": voc_run.config["classifier"]["pretrained"],
        "segmenter.net.pretrained": voc_run.config["segmenter"]["net"]["pretrained"],
    }
    configfiles, config = preset_run_config(workdir, overrides)
    res = f"results/{config['run']}"
    method = config["cams"]["methods"][0]  # transformer attribution; the others run alike
    targets = [f"{res}/tables/cams_{method}_summary.csv", f"{res}/labels/val.csv"]
    log, seconds = run_workflow(workdir, configfiles, *targets)
    print(f"\nprepared VOC tree, make_labels to eval_cams: {seconds:.0f} s")
    assert "download_voc" not in log and "prepare_voc" not in log
    assert not (workdir / "data").exists()
    assert "finetune_classifier" in log and "extract_cams" in log
    summary = pd.read_csv(workdir / targets[0])
    assert summary.notna().any(axis=None) and len(summary) == 1
    for split, ids in (("train_aug", EXPECTED_TRAIN_AUG), ("val", list(MINI.voc_val))):
        labels = pd.read_csv(workdir / res / "labels" / f"{split}.csv")
        assert list(labels["image_id"]) == ids
        assert labels[list(VOC_CLASSES)].to_numpy().tolist() == MINI.label_rows(ids)


def test_an_unsafe_archive_stops_with_one_line(tmp_path):
    """A VOC archive with a ``../`` member, served on loopback with its checksum, stops
    prepare_voc with one line naming the member; nothing is written outside, no tree is left."""
    evil = tmp_path / "server" / "evil.tar"
    evil.parent.mkdir()
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("VOCdevkit/VOC2012/JPEGImages/a.jpg")
        tar.addfile(info)
        info = tarfile.TarInfo("VOCdevkit/VOC2012/../../../../escaped.txt")
        tar.addfile(info)
    workdir = copy_workflow(tmp_path / "workflow")
    with RangeServer({"/evil.tar": evil.read_bytes()}) as server:
        overrides = {
            "data.voc2012.voc_url": server.url("/evil.tar"),
            "data.voc2012.voc_md5": md5(evil),
            "data.voc2012.use_sbd": False,
        }
        configfiles, config = preset_run_config(workdir, overrides)
        root = config["data"]["voc2012"]["root"]
        proc = snakemake(workdir, "--cores", "1", "--configfile", *configfiles, "--", root)
    assert proc.returncode != 0
    errors = [
        line for line in output(proc).splitlines() if line.startswith("data_prepare_voc: error:")
    ]
    assert len(errors) == 1, tail(output(proc))
    assert "refusing member 'VOCdevkit/VOC2012/../../../../escaped.txt'" in errors[0]
    assert "'..' in the path" in errors[0]
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (workdir / root).exists()
