"""JSON command-line arguments: wsss_core.cli.parse_json_object, wsss_core.seeds.crf.parse_crf_json
and the workflow scripts that use them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_utils import load_script

from wsss_core.affinity.net import AffinityConfigError
from wsss_core.classifier.model import ClassifierConfigError
from wsss_core.cli import JSONArgumentError, parse_json_object
from wsss_core.seeds.crf import CRFParams, parse_crf_json

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
    code = load_script("seeds_crf").main(
        ["--store", "x.h5", "--data-root", "d", "--config-json", NOT_JSON, "--out-dir", out]
    )
    assert code == 2
    assert re.search(
        r"^seeds_crf: error: --config-json is not valid JSON.*config section seeds",
        capsys.readouterr().err,
        flags=re.M,
    )
    seeds = '{"alpha_low": 4, "alpha_high": 32, "crf": [1, 2]}'
    code = load_script("seeds_crf").main(
        ["--store", "x.h5", "--data-root", "d", "--config-json", seeds, "--out-dir", out]
    )
    assert code == 2
    assert "must be a JSON object (config section seeds.crf)" in capsys.readouterr().err
    walk = load_script("walk_masks")
    cfg = '{"alpha": 4, "beta": 8, "logt": 8, "radius": 5, "normalise": true, "crf": [1, 2]}'
    args = walk.parse_args(
        ["--store", "x.h5", "--affinity", "a.pt", "--data-root", "d", "--config-json", cfg]
        + ["--device", "cpu", "--out-dir", out, "--crf-out-dir", out]
    )
    with pytest.raises(ValueError, match="must be a JSON object.*walk.crf"):
        walk.run(args)
    assert not Path(out).exists()


def test_predict_and_train_segmenter_exit_as_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    argv = ["--model", "m.pt", "--data-root", "d", "--split", "val", "--device", "cpu"]
    argv += ["--out-dir", out, "--crf-out-dir", out]
    inference = '{"scales": [1.0], "flip": false, "crf": %s}'
    assert load_script("segmenter_predict").main(
        [*argv, "--config-json", inference % NOT_OBJECT]
    ) == 2  # fmt: skip
    assert (
        "segmenter_predict: error: --config-json must be a JSON object (config section "
        "segmenter.inference.crf)"
    ) in capsys.readouterr().err
    # unknown CRF keys: the same one line
    assert load_script("segmenter_predict").main(
        [*argv, "--config-json", inference % '{"sigma": 1}']
    ) == 2  # fmt: skip
    assert "segmenter_predict: error: unknown CRF parameter" in capsys.readouterr().err
    # a config key missing from the section: named
    assert load_script("segmenter_predict").main([*argv, "--config-json", '{"flip": true}']) == 2
    assert "lacks the config key(s) segmenter.inference.scales" in capsys.readouterr().err
    argv = ["--masks", "m", "--data-root", "d", "--split", "train", "--seed", "0"]
    argv += ["--device", "cpu", "--out-dir", out, "--config-json", NOT_JSON]
    assert load_script("segmenter_train").main(argv) == 2
    assert "config section segmenter.net" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.parametrize(
    ("name", "error", "section", "argv"),
    [
        (
            "classifier_train",
            ClassifierConfigError,
            "classifier",
            ["--data-root", "d", "--train-labels", "t.csv", "--val-labels", "v.csv"],
        ),
        (
            "affinity_train",
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
    argv = [*argv, "--seed", "0", "--device", "cpu"]
    args = script.parse_args([*argv, "--config-json", text, "--out-dir", str(tmp_path / "o")])
    with pytest.raises(error, match=f"^--config-json .*config section {section}"):
        script.run(args)
    assert not (tmp_path / "o").exists()
