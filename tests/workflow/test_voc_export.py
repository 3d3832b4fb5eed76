"""``snakemake export_voc_test`` with the VOC preset, in seconds: the miniature VOC2012test.tar
(tests/support/voc_miniature.py) served on loopback, and a small segmenter of the 20 VOC classes
saved where train_segmenter writes it, standing for a trained run (``--allowed-rules`` keeps
Snakemake to the three export rules). tests/workflow/test_voc_preset.py runs the same export
after a whole preset run. Marked ``slow`` (a Snakemake run)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from http_server import RangeServer
from PIL import Image
from voc_miniature import Miniature, md5, voc_test_tar
from workflow_utils import (
    VOC_PRESET,
    copy_workflow,
    job_counts,
    output,
    run_config,
    snakemake,
    tail,
    with_values,
    write_config,
)

from wsss_core.data.palette import VOC_PALETTE
from wsss_core.data.voc import VOC_CLASSES
from wsss_core.segmenter.model import build_segmenter, load_segmenter, save_segmenter
from wsss_core.segmenter.predict import predict

pytestmark = pytest.mark.slow

TEST_MINI = Miniature(voc_train=(), voc_val=("2008_000001", "2008_000004", "2008_000011"))
EXPORT_RULES = ["download_voc_test", "prepare_voc_test", "export_voc_test"]


def segmenter_file(path: Path, class_names: list[str]) -> Path:
    torch.manual_seed(0)
    config = {"backbone": "resnet10t", "aspp_channels": 8, "low_level_channels": 4,
              "decoder_channels": 8, "num_classes": len(class_names) + 1}  # fmt: skip
    info = {"class_names": class_names, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}
    save_segmenter(path, build_segmenter(config), info)
    return path


def export(workdir: Path, configfiles: list[str]):
    return snakemake(
        workdir, "--cores", "1", "--configfile", *configfiles,
        "--allowed-rules", *EXPORT_RULES, "--", "export_voc_test", timeout=600,
    )  # fmt: skip


def jpeg(archive: Path, image_id: str) -> np.ndarray:
    """A test image as the archive holds it (a JPEG, decoded)."""
    with tarfile.open(archive) as tar:
        data = tar.extractfile(f"VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg").read()
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_export_voc_test_writes_the_server_archive(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    config = run_config(workdir, VOC_PRESET)
    res = workdir / "results" / config["run"]
    model_path = res / "segmenter" / config["segmenter"]["pseudo_method"] / "segmenter.pt"
    segmenter_file(model_path, list(VOC_CLASSES))
    base = {"device": "cpu", "resources.threads": 1, "resources.gpus_per_job": 0}
    files = [VOC_PRESET, write_config(workdir, "base.yaml", with_values({}, base))]

    # no test_url: one line that says where to get the archive
    proc = export(workdir, files)
    assert proc.returncode != 0
    errors = [line for line in output(proc).splitlines() if "data_download: error:" in line]
    assert errors and "config key data.voc2012.test_url: not set" in errors[0], tail(output(proc))

    archive = voc_test_tar(tmp_path / "VOC2012test.tar", TEST_MINI)
    with RangeServer({"/eval/VOC2012test.tar": archive.read_bytes()}) as server:
        keys = {"data.voc2012.test_url": server.url("/eval/VOC2012test.tar"),
                "data.voc2012.test_md5": md5(archive)}  # fmt: skip
        proc = export(workdir, [*files, write_config(workdir, "test.yaml", with_values({}, keys))])
    assert proc.returncode == 0, tail(output(proc))
    assert set(job_counts(output(proc))) == set(EXPORT_RULES)

    ids = TEST_MINI.all_ids
    folder = res / "export" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    model, info = load_segmenter(model_path, "cpu")
    inference = config["segmenter"]["inference"]
    with tarfile.open(res / "export" / "voc2012_test.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids
        ]
        for image_id, member in zip(ids, members, strict=True):
            data = tar.extractfile(member).read()
            assert data == (folder / f"{image_id}.png").read_bytes()
            with Image.open(io.BytesIO(data)) as png:
                assert png.mode == "P" and png.getpalette()[:63] == VOC_PALETTE[:63]
                labels = np.asarray(png)
            assert labels.shape == TEST_MINI.shape(image_id)  # the image's own size
            probs = predict(model, jpeg(archive, image_id), info["mean"], info["std"],
                            inference["scales"], inference["flip"])  # fmt: skip
            np.testing.assert_array_equal(labels, probs.argmax(axis=0))
            assert labels.max() <= 20


def test_a_segmenter_of_other_classes_is_refused(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    config = run_config(workdir, VOC_PRESET)
    res = workdir / "results" / config["run"]
    segmenter_file(
        res / "segmenter" / config["segmenter"]["pseudo_method"] / "segmenter.pt", ["a", "b"]
    )
    archive = voc_test_tar(tmp_path / "VOC2012test.tar", TEST_MINI)
    keys = {"device": "cpu", "resources.threads": 1, "data.voc2012.test_url": str(archive)}
    proc = export(workdir, [VOC_PRESET, write_config(workdir, "t.yaml", with_values({}, keys))])
    assert proc.returncode != 0
    errors = [line for line in output(proc).splitlines() if "segmenter_export: error:" in line]
    assert errors and "not the 20 PASCAL VOC classes" in errors[0], tail(output(proc))
    assert not (res / "export" / "voc2012_test.tar").exists()
