"""JSON command-line arguments: wsss_core.cli.parse_json_object, wsss_core.crf.parse_crf_json
and the workflow scripts that use them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_utils import load_script

from wsss_core.affinity_net import AffinityConfigError
from wsss_core.classifier import ClassifierConfigError
from wsss_core.cli import JSONArgumentError, parse_json_object
from wsss_core.crf import CRFParams, parse_crf_json

NOT_JSON = '{"epochs": 2,'
NOT_OBJECT = "[1, 2]"


def test_parse_json_object_returns_the_dict() -> None:
    text = '{"epochs": 2, "lr": 0.5, "scale_range": [0.7, 1.3], "name": "x", "flag": null}'
    assert parse_json_object(text, "--config-json", "classifier") == {
        "epochs": 2,
        "lr": 0.5,
        "scale_range": [0.7, 1.3],
        "name": "x",
        "flag": None,
    }
    assert parse_json_object("{}", "--config-json", "classifier") == {}


@pytest.mark.parametrize(
    ("text", "what"),
    [(NOT_JSON, "is not valid JSON"), (NOT_OBJECT, "must be a JSON object"), ("null", "object")],
)
def test_parse_json_object_rejects(text: str, what: str) -> None:
    with pytest.raises(JSONArgumentError, match=what) as info:
        parse_json_object(text, "--config-json", "segmenter.net")
    assert isinstance(info.value, ValueError)
    assert "--config-json" in str(info.value)
    assert "config section segmenter.net" in str(info.value)


@pytest.mark.parametrize(
    ("error", "section"),
    [(AffinityConfigError, "affinity.net"), (ClassifierConfigError, "classifier")],
)
@pytest.mark.parametrize("text", [NOT_JSON, NOT_OBJECT])
def test_parse_json_object_raises_the_given_error(
    error: type[Exception], section: str, text: str
) -> None:
    with pytest.raises(error, match=f"^--config-json .*config section {section}"):
        parse_json_object(text, "--config-json", section, error)


def test_parse_json_object_error_says_what_it_got() -> None:
    with pytest.raises(JSONArgumentError, match="got list$"):
        parse_json_object(NOT_OBJECT, "--x", "s")
    with pytest.raises(JSONArgumentError, match=r"line 1 column 14 \(char 13\)"):
        parse_json_object(NOT_JSON, "--x", "s")


def test_parse_crf_json_values() -> None:
    params = parse_crf_json('{"bilateral_sxy": 20, "iterations": 5}', "affinity.crf")
    assert params == CRFParams(bilateral_sxy=20.0, iterations=5)
    assert params.gauss_sxy == 3.0 and params.bilateral_srgb == 13.0
    assert parse_crf_json("{}", "random_walk.crf") == CRFParams()


@pytest.mark.parametrize("text", [NOT_JSON, NOT_OBJECT, '"crf"'])
def test_parse_crf_json_rejects_non_objects(text: str) -> None:
    with pytest.raises(ValueError, match="^--crf-json .*config section random_walk.crf"):
        parse_crf_json(text, "random_walk.crf")
    with pytest.raises(ValueError, match="^--seed-crf .*config section affinity.crf"):
        parse_crf_json(text, "affinity.crf", option="--seed-crf")


def test_parse_crf_json_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="unknown CRF parameter.*'sxy'"):
        parse_crf_json('{"sxy": 3}', "affinity.crf")
    with pytest.raises(ValueError, match="'iterations' must be an integer >= 1"):
        parse_crf_json('{"iterations": 0}', "affinity.crf")


def test_crf_scripts_name_their_config_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    code = load_script("crf_seeds").main(
        ["--store", "x.h5", "--data-root", "d", "--crf-json", NOT_JSON, "--out-dir", out]
    )
    assert code == 2
    assert re.search(
        r"^crf_seeds: error: --crf-json is not valid JSON.*affinity.crf",
        capsys.readouterr().err,
        flags=re.M,
    )
    walk = load_script("random_walk")
    args = walk.parse_args(
        ["--store", "x.h5", "--affinity", "a.pt", "--data-root", "d", "--alpha", "4"]
        + ["--device", "cpu", "--out-dir", out, "--crf-json", NOT_OBJECT, "--crf-out-dir", out]
    )
    with pytest.raises(ValueError, match="must be a JSON object.*random_walk.crf"):
        walk.run(args)
    assert not Path(out).exists()


def test_predict_and_train_segmenter_exit_as_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    argv = ["--model", "m.pt", "--data-root", "d", "--out-dir", out, "--crf-out-dir", out]
    assert load_script("predict_segmenter").main([*argv, "--crf-json", NOT_OBJECT]) == 2
    assert "predict_segmenter: error: --crf-json must be a JSON object" in capsys.readouterr().err
    # unknown CRF keys: the same one line
    assert load_script("predict_segmenter").main([*argv, "--crf-json", '{"sigma": 1}']) == 2
    assert "predict_segmenter: error: unknown CRF parameter" in capsys.readouterr().err
    argv = ["--masks", "m", "--data-root", "d", "--out-dir", out, "--config-json", NOT_JSON]
    assert load_script("train_segmenter").main(argv) == 2
    assert "config section segmenter.net" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.parametrize(
    ("name", "error", "section", "argv"),
    [
        (
            "finetune_classifier",
            ClassifierConfigError,
            "classifier",
            ["--data-root", "d", "--train-labels", "t.csv", "--val-labels", "v.csv"],
        ),
        (
            "train_affinity",
            AffinityConfigError,
            "affinity.net",
            ["--classifier", "c.pt", "--seeds", "s", "--data-root", "d", "--split", "train"],
        ),
    ],
)
@pytest.mark.parametrize("text", [NOT_JSON, NOT_OBJECT])
def test_training_scripts_keep_their_config_error(
    tmp_path: Path, name: str, error: type[Exception], section: str, argv: list[str], text: str
) -> None:
    script = load_script(name)
    args = script.parse_args([*argv, "--config-json", text, "--out-dir", str(tmp_path / "o")])
    with pytest.raises(error, match=f"^--config-json .*config section {section}"):
        script.run(args)
    assert not (tmp_path / "o").exists()
