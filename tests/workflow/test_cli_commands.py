"""``wsss predict`` and ``wsss explain`` on a tiny finished run made without Snakemake.

The run folder is built as the workflow leaves it, training nothing: a synthetic dataset, a
classifier and a segmenter built by the library's builders (random weights) and saved as the
rules save them, and two of the workflow's own jobs run by their scripts as the rules call them
(``predict_segmenter`` and ``extract_cams``, with their logs), with settings that are not the
config defaults. The commands must find the models and those recorded settings, give the
workflow's masks (``wsss_core.segmenter.predict``) and relevance maps, and stop on bad input
with one line and exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from workflow_utils import REPO, load_script

from wsss_core.cams.images import classifier_inputs, file_label, input_size
from wsss_core.cams.multiscale import explain_multiscale
from wsss_core.cams.store import upsample_normalise
from wsss_core.classifier.model import build_classifier, load_classifier, save_classifier
from wsss_core.commands import main
from wsss_core.data.image_files import read_image
from wsss_core.data.labels import build_label_table, write_label_table
from wsss_core.data.layout import read_class_names, read_split
from wsss_core.data.palette import VOC_PALETTE, load_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.report.figures import heat_overlay
from wsss_core.segmenter.model import build_segmenter, load_segmenter, save_segmenter
from wsss_core.segmenter.predict import predict

torch.set_num_threads(1)

METHOD = "transformer_attribution"
MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.3]
# the run's settings, none of them the config default (segmenter.inference flip is true,
# cams flip false and start_layer 1)
INFERENCE = {"scales": [1.0, 0.75], "flip": False, "crf": {"iterations": 1}}
CAMS = {"scales": [1.0, 0.5], "flip": True, "start_layer": 0}
SEGMENTER = {
    "backbone": "resnet10t",
    "aspp_channels": 8,
    "low_level_channels": 4,
    "decoder_channels": 8,
}


def script(name: str, *args) -> None:
    """A workflow script as its rule runs it, logging to --log. (Its log goes through file
    descriptor 2, where pytest's capture of sys.stderr would not let it: given the real one.)"""
    with contextlib.redirect_stderr(sys.__stderr__), contextlib.redirect_stdout(sys.__stdout__):
        assert load_script(name).main([str(arg) for arg in args]) == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """results/tiny as the workflow leaves it (the stages these commands read)."""
    run = tmp_path_factory.mktemp("cli") / "results" / "tiny"
    data = run / "data" / "synthetic"
    generate_dataset(data, num_classes=3, image_size=36, num_train=3, num_val=3, seed=1)
    names = read_class_names(data)
    torch.manual_seed(0)
    cfg = {"backbone": "hybrid_tiny", "num_classes": 3, "img_size": 32, "pretrained": False}
    save_classifier(run / "classifier" / "model.pt", build_classifier(cfg), cfg, names)
    segmenter = build_segmenter({**SEGMENTER, "num_classes": len(names) + 1})
    with torch.no_grad():  # bold logits: random weights that predict several classes
        segmenter.classifier.bias.zero_()
        segmenter.classifier.weight.mul_(20)
    info = {"class_names": names, "mean": MEAN, "std": STD, "epochs": 1}
    save_segmenter(run / "segmenter" / METHOD / "segmenter.pt", segmenter, info)
    predictions = run / "predictions" / METHOD
    script(
        "segmenter_predict", "--model", run / "segmenter" / METHOD / "segmenter.pt",
        "--data-root", data, "--split", "val", "--config-json", json.dumps(INFERENCE),
        "--device", "cpu", "--threads", "1", "--out-dir", predictions / "seg",
        "--crf-out-dir", predictions / "seg_crf",
        "--log", run / "logs" / "predict_segmenter" / f"{METHOD}.log",
    )  # fmt: skip
    write_label_table(build_label_table(data, "train"), run / "labels" / "train.csv")
    script(
        "cams_extract", "--classifier", run / "classifier" / "model.pt", "--data-root", data,
        "--labels", run / "labels" / "train.csv", "--method", METHOD,
        "--config-json", json.dumps({k: CAMS[k] for k in ("scales", "flip", "start_layer")}),
        "--device", "cpu", "--threads", "1", "--out", run / "cams" / "shard.h5",
        "--log", run / "logs" / "extract_cams" / METHOD / "1-of-1.log",
    )  # fmt: skip
    return run


@pytest.fixture(scope="module")
def images(run) -> Path:
    """New images: formats, modes and sizes the dataset does not have (three of one size)."""
    folder = run.parents[1] / "new_images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "plain.png")
    alpha = np.concatenate([rgb[::-1], np.full((40, 52, 1), 200, np.uint8)], axis=2)
    Image.fromarray(alpha, mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb[:, ::-1]).save(folder / "photo.jpg", quality=90)
    grey = rng.integers(0, 256, (29, 23), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(folder / "grey.bmp")
    (folder / "notes.txt").write_text("not an image")  # left out: not an image extension
    return folder


def segmenter_reference(run, paths, scales, flip) -> dict[str, np.ndarray]:
    """The workflow's prediction of each image: argmax of ``predict``."""
    model, info = load_segmenter(run / "segmenter" / METHOD / "segmenter.pt")
    return {
        p.stem: predict(model, read_image(p), info["mean"], info["std"], scales, flip).argmax(0)
        for p in paths
    }


def relevance_reference(run, path, classes, scales, flip, start_layer) -> np.ndarray:
    """Maps [K, H, W] in [0, 1] of one image, explained alone, step by step."""
    model, info = load_classifier(run / "classifier" / "model.pt")
    image = read_image(path)
    size = input_size(info, "model.pt")
    x = classifier_inputs([image], size, info["mean"], info["std"], "cpu")
    maps = explain_multiscale(model, x, [classes], METHOD, scales, flip, start_layer)[0]
    return upsample_normalise(maps.numpy(), image.shape[:2])


def outputs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_predict_gives_the_workflow_masks_with_the_run_settings(run, tmp_path, capsys):
    data = run / "data" / "synthetic"
    out = tmp_path / "out"
    argv = ["predict", str(run), str(data / "JPEGImages"), "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    assert f"as recorded by the run in {run}/logs/predict_segmenter/{METHOD}.log" in err
    ids = read_split(data, "train") + read_split(data, "val")
    assert outputs(out) == {f"{i}.png" for i in ids} | {f"{i}_overlay.png" for i in ids}
    for image_id in read_split(data, "val"):  # the workflow's own predictions
        workflow = load_mask(run / "predictions" / METHOD / "seg" / f"{image_id}.png")
        np.testing.assert_array_equal(load_mask(out / f"{image_id}.png"), workflow)
    paths = sorted((data / "JPEGImages").glob("*.jpg"))
    expected = segmenter_reference(run, paths, INFERENCE["scales"], INFERENCE["flip"])
    for stem, mask in expected.items():
        np.testing.assert_array_equal(load_mask(out / f"{stem}.png"), mask)
        with Image.open(out / f"{stem}.png") as png:
            assert png.mode == "P" and png.getpalette() == VOC_PALETTE[: len(png.getpalette())]


def test_predict_with_relevance_on_new_images(run, images, tmp_path):
    out = tmp_path / "out"
    argv = ["predict", str(run), str(images), "--out", str(out), "--relevance"]
    assert main([*argv, "--device", "cpu", "--batch-size", "2"]) == 0
    names = read_class_names(run / "data" / "synthetic")
    paths = sorted(p for p in images.iterdir() if p.suffix != ".txt")
    expected = segmenter_reference(run, paths, INFERENCE["scales"], INFERENCE["flip"])
    files, explained = set(), 0
    for path in paths:
        stem, image = path.stem, read_image(path)
        mask = load_mask(out / f"{stem}.png")
        np.testing.assert_array_equal(mask, expected[stem])
        with Image.open(out / f"{stem}_overlay.png") as overlay:
            assert overlay.mode == "RGB" and overlay.size == (image.shape[1], image.shape[0])
            overlay = np.array(overlay)
        np.testing.assert_array_equal(overlay[mask == 0], image[mask == 0])
        assert (overlay[mask > 0] != image[mask > 0]).any(axis=-1).mean() > 0.5
        classes = [int(label) - 1 for label in np.unique(mask) if label > 0]
        explained += len(classes)
        files |= {f"{stem}.png", f"{stem}_overlay.png"}
        files |= {f"{stem}_{file_label(names[c])}.png" for c in classes}
        maps = relevance_reference(run, path, classes, **CAMS)
        for heat, c in zip(maps, classes, strict=True):
            with Image.open(out / f"{stem}_{file_label(names[c])}.png") as png:
                got = np.array(png).astype(int)
            assert got.shape == image.shape
            # explained in a batch or alone: a float rounding apart, one colour step at most
            diff = np.abs(got - heat_overlay(image, heat))
            assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    assert explained > 0  # the random segmenter predicts classes to explain
    assert outputs(out) == files  # exactly the predicted classes' maps, nothing else


def test_explain_present_all_and_named_classes(run, images, tmp_path, capsys):
    names = read_class_names(run / "data" / "synthetic")
    out = tmp_path / "present"
    argv = ["explain", str(run / "classifier" / "model.pt"), str(images), "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--npy", "--batch-size", "3"]) == 0
    err = capsys.readouterr().err  # the run's cams settings
    assert f"as recorded by the run in {run}/logs/extract_cams/{METHOD}/1-of-1.log" in err
    model, info = load_classifier(run / "classifier" / "model.pt")
    scores = pd.read_csv(out / "scores.csv")
    paths = sorted(p for p in images.iterdir() if p.suffix != ".txt")
    assert sorted(scores["stem"]) == sorted(p.stem for p in paths)
    files, explained = {"scores.csv"}, 0
    for path in paths:
        image = read_image(path)
        x = classifier_inputs([image], input_size(info, "m"), info["mean"], info["std"], "cpu")
        with torch.no_grad():
            probs = torch.sigmoid(model(x))[0].numpy()
        row = scores[scores["stem"] == path.stem].iloc[0]
        np.testing.assert_allclose(row[names].to_numpy(float), probs, atol=1e-5)
        present = [c for c in range(len(names)) if probs[c] >= 0.5]
        explained += len(present)
        maps = relevance_reference(run, path, present, **CAMS)
        for heat, c in zip(maps, present, strict=True):
            name = f"{path.stem}_{file_label(names[c])}"
            files |= {f"{name}.png", f"{name}.npy"}
            np.testing.assert_allclose(np.load(out / f"{name}.npy"), heat, atol=1e-4)
    assert 0 < explained < len(names) * len(paths)  # some classes present, some not
    assert outputs(out) == files

    argv = ["explain", str(run), str(images / "plain.png"), "--device", "cpu", "--flip"]
    assert main([*argv, "--out", str(tmp_path / "all"), "--classes", "all"]) == 0
    assert outputs(tmp_path / "all") == {"scores.csv"} | {f"plain_{n}.png" for n in names}
    assert main([*argv, "--out", str(tmp_path / "one"), "--classes", names[1]]) == 0
    assert outputs(tmp_path / "one") == {"scores.csv", f"plain_{names[1]}.png"}


def test_the_console_script_names_main_and_runs_as_a_module(run, images, tmp_path):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["wsss"].partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is main
    segmenter = run / "segmenter" / METHOD / "segmenter.pt"  # a file: its run is found too
    proc = subprocess.run(
        [sys.executable, "-m", module, "predict", str(segmenter), str(images / "grey.bmp"),
         "--out", str(tmp_path / "out"), "--device", "cpu"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},  # this checkout's wsss_core
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert outputs(tmp_path / "out") == {"grey.png", "grey_overlay.png"}
    assert "as recorded by the run" in proc.stderr
    expected = segmenter_reference(run, [images / "grey.bmp"], **{
        k: INFERENCE[k] for k in ("scales", "flip")
    })  # fmt: skip
    np.testing.assert_array_equal(load_mask(tmp_path / "out" / "grey.png"), expected["grey"])


BAD_INPUTS = {
    "missing run": (["predict", "{tmp}/nowhere", "{images}"], "{tmp}/nowhere does not exist"),
    "results folder": (["predict", "{results}", "{images}"], "holds the run folders tiny"),
    "no images": (["predict", "{run}", "{tmp}/empty"], "no images found in {tmp}/empty"),
    "missing image": (["predict", "{run}", "{tmp}/x.jpg"], "{tmp}/x.jpg does not exist"),
    "unreadable": (["predict", "{run}", "{tmp}/bad.jpg"], "cannot read image {tmp}/bad.jpg"),
    "same stem": (["predict", "{run}", "{images}", "{tmp}/plain.jpg"], "same name stem 'plain'"),
    "no classifier": (["predict", "{tmp}/alone.pt", "{images}", "--relevance"], "--classifier"),
    "classifier for segmenter": (
        ["predict", "{run}/classifier/model.pt", "{images}"],
        "is a classifier, not a segmenter",
    ),  # fmt: skip
    "segmenter for classifier": (
        ["explain", "{tmp}/alone.pt", "{images}"],
        "is a segmenter, not a classifier",
    ),  # fmt: skip
    "unknown class": (
        ["explain", "{run}", "{images}", "--classes", "cat"],
        "unknown class(es) cat",
    ),
    "no cuda": (["predict", "{run}", "{images}", "--device", "cuda"], "CUDA is not available"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, run, images, tmp_path, capsys):
    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jpg").write_text("not a JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.jpg")
    shutil.copy(run / "segmenter" / METHOD / "segmenter.pt", tmp_path / "alone.pt")
    argv, message = BAD_INPUTS[case]
    fill = {"tmp": tmp_path, "images": images, "run": run, "results": run.parent}
    argv = [arg.format(**fill) for arg in argv]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("wsss: error: "), err
    assert message.format(**fill) in errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_option_values_stop_argparse_with_exit_2(run, images, tmp_path, capsys):
    for bad in (["--batch-size", "0"], ["--scales", "1,-1"]):
        with pytest.raises(SystemExit) as stop:
            main(["predict", str(run), str(images), "--out", str(tmp_path), *bad])
        assert stop.value.code == 2
        assert "wsss predict: error: argument" in capsys.readouterr().err
