"""wsss_core.runs: a run folder's model files, and the settings its job logs recorded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from wsss_core.classifier.model import build_classifier, save_classifier
from wsss_core.cli import UserError
from wsss_core.runs import (
    CAMS_DEFAULTS,
    INFERENCE_DEFAULTS,
    RunModels,
    cams_settings,
    classifier_model,
    inference_settings,
    parse_settings,
    saved_model_kind,
    segmenter_models,
    settings_text,
)
from wsss_core.segmenter.model import build_segmenter, save_segmenter

REPO = Path(__file__).resolve().parents[2]

# lines the workflow's jobs logged before settings_text existed (results/demo)
PREDICT_LINE = (
    "2026-12-03 INFO predicting 200 images of val on cpu (scales [1.0], flip True, CRF True)"
)
CAMS_LINE = (
    "2026-12-03 INFO transformer_attribution: 400 of 800 images (shard 0/2), 96 px, "
    "scales [1.0, 0.5], flip False, start layer 2, LRP chefer, device cpu"
)


def test_settings_text_round_trip():
    text = settings_text([1, 0.5, 1.75], True, 0)
    assert text == "scales [1.0, 0.5, 1.75], flip True, start layer 0"
    assert parse_settings(f"x\n{text}\nprogress") == {
        "scales": [1.0, 0.5, 1.75],
        "flip": True,
        "start_layer": 0,
    }
    assert parse_settings(settings_text([2.0], False)) == {"scales": [2.0], "flip": False}


def test_the_lines_of_earlier_runs_parse_and_the_last_line_wins():
    assert parse_settings(PREDICT_LINE) == {"scales": [1.0], "flip": True}
    assert parse_settings(CAMS_LINE) == {"scales": [1.0, 0.5], "flip": False, "start_layer": 2}
    later = settings_text([0.5], False)
    assert parse_settings(f"{PREDICT_LINE}\n{later}")["scales"] == [0.5]
    assert parse_settings("no settings here") is None


def test_the_defaults_are_the_schemas():
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    sections = schema["properties"]
    inference = sections["segmenter"]["properties"]["inference"]["properties"]
    assert INFERENCE_DEFAULTS == {key: inference[key]["default"] for key in INFERENCE_DEFAULTS}
    cams = sections["cams"]["properties"]
    assert CAMS_DEFAULTS == {key: cams[key]["default"] for key in CAMS_DEFAULTS}


def test_options_over_the_run_record_over_the_defaults(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run = tmp_path / "run"
    assert inference_settings(run, "m") == INFERENCE_DEFAULTS
    assert f"the run {run} records no segmenter.inference settings" in caplog.text
    assert "--scales and --flip/--no-flip" in caplog.text
    log = run / "logs" / "predict_segmenter" / "m.log"
    log.parent.mkdir(parents=True)
    log.write_text(PREDICT_LINE.replace("flip True", "flip False").replace("[1.0]", "[1.0, 2.0]"))
    assert inference_settings(run, "m") == {"scales": [1.0, 2.0], "flip": False}
    assert f"as recorded by the run in {log}" in caplog.text
    assert inference_settings(run, "m", flip=True) == {"scales": [1.0, 2.0], "flip": True}
    assert "options flip; the rest as recorded" in caplog.text
    assert inference_settings(run, "other") == INFERENCE_DEFAULTS  # another method's log: no
    assert inference_settings(None, None, scales=[0.5]) == {"scales": [0.5], "flip": True}


def test_cams_settings_of_the_method_else_of_another(tmp_path):
    run = tmp_path / "run"
    for method, line in (("rollout", CAMS_LINE), ("full_lrp", CAMS_LINE.replace("2,", "5,"))):
        (run / "logs" / "extract_cams" / method).mkdir(parents=True)
        (run / "logs" / "extract_cams" / method / "1-of-2.log").write_text(line)
    assert cams_settings(run, "full_lrp")["start_layer"] == 5
    assert cams_settings(run, "rollout") == {"scales": [1.0, 0.5], "flip": False, "start_layer": 2}
    assert cams_settings(run, "attn_gradcam")["start_layer"] == 5  # full_lrp: first by name
    assert cams_settings(tmp_path / "none", "rollout", start_layer=3) == {
        **CAMS_DEFAULTS,
        "start_layer": 3,
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """results/ with run 'a' (classifier, one segmenter) and run 'b' (two segmenters)."""
    results = tmp_path_factory.mktemp("runs") / "results"
    cfg = {"backbone": "hybrid_tiny", "num_classes": 2, "img_size": 16, "pretrained": False}
    save_classifier(
        results / "a" / "classifier" / "model.pt", build_classifier(cfg), cfg, ["x", "y"]
    )
    seg = build_segmenter({"backbone": "resnet10t", "aspp_channels": 4, "low_level_channels": 4,
                           "decoder_channels": 4, "num_classes": 3})  # fmt: skip
    info = {"class_names": ["x", "y"], "mean": [0.5] * 3, "std": [0.5] * 3}
    for run, method in (("a", "rollout"), ("b", "rollout"), ("b", "full_lrp")):
        save_segmenter(results / run / "segmenter" / method / "segmenter.pt", seg, info)
    return results


def test_a_run_folders_models(results):
    models = segmenter_models(results / "a")
    assert models.segmenter == results / "a" / "segmenter" / "rollout" / "segmenter.pt"
    assert models.classifier == results / "a" / "classifier" / "model.pt"
    assert (models.run_dir, models.method) == (results / "a", "rollout")
    b = segmenter_models(results / "b", method="full_lrp")
    assert b.segmenter.parent.name == "full_lrp" and b.classifier is None
    from_file = segmenter_models(models.segmenter)
    assert from_file == models  # a file inside a run: its run is found
    assert classifier_model(results / "a") == classifier_model(models.classifier)
    assert classifier_model(models.classifier).run_dir == results / "a"


def test_a_bare_model_file_has_no_run(results, tmp_path):
    alone = tmp_path / "seg.pt"
    alone.write_bytes((results / "a" / "segmenter" / "rollout" / "segmenter.pt").read_bytes())
    assert segmenter_models(alone) == RunModels(alone, None, None, None)
    other = results / "a" / "classifier" / "model.pt"
    assert segmenter_models(alone, classifier=other).classifier == other


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: segmenter_models(r / "c"), "does not exist; give a finished run folder"),
        (lambda r: segmenter_models(r), "holds the run folders a, b: give one, e.g."),
        (lambda r: segmenter_models(r / "b"), "several methods (full_lrp, rollout); pick one"),
        (lambda r: segmenter_models(r / "a", method="x"), "no segmenter of method 'x'"),
        (lambda r: segmenter_models(r / "a", classifier=r / "no.pt"), "no.pt does not exist"),
        (lambda r: classifier_model(r / "b"), "no trained classifier (classifier/model.pt)"),
        (lambda r: classifier_model(r / "c.pt"), "does not exist; give a finished run folder"),
    ],
)
def test_what_is_not_a_run_is_a_user_error(results, call, message):
    with pytest.raises(UserError) as err:
        call(results)
    assert message in str(err.value)


def test_saved_model_kind(results, tmp_path):
    assert saved_model_kind(results / "a" / "classifier" / "model.pt") == "classifier"
    assert saved_model_kind(results / "b" / "segmenter" / "rollout" / "segmenter.pt") == "segmenter"
    (tmp_path / "x.pt").write_text("no")
    torch.save({"model_config": {"k": 1}}, tmp_path / "y.pt")
    assert saved_model_kind(tmp_path / "x.pt") is None
    assert saved_model_kind(tmp_path / "y.pt") is None
