"""Running a preset (configs/*.yaml) for real in tests: the sizes a test changes, weights files
made here, the --configfile list of the preset plus an overrides file, a run that fails with
the log of the job that failed (tests/workflow/test_voc_preset.py, test_coco_preset.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file
from workflow_utils import (
    VOC_PRESET,
    load_yaml,
    merge_config,
    output,
    snakemake,
    tail,
    with_values,
    write_config,
)

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


def preset_run_config(
    workdir: Path, overrides: dict[str, Any], preset: str = VOC_PRESET
) -> tuple[list[str], dict]:
    """The preset and an overrides file beside it: the --configfile list and the merged config."""
    resources = {
        f"resources.rules.{rule}": {"mem_mb": 1000, "runtime": 10}
        for rule in load_yaml(workdir / preset)["resources"]["rules"]
    }
    override = with_values({}, {**SIZES, **resources, **overrides})
    name = f"{Path(preset).stem}_test_overrides.yaml"
    files = [preset, write_config(workdir, name, override)]
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
