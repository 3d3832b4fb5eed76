"""A finished run folder ``results/<run>``: its model files and the settings it recorded.

The models: ``classifier/model.pt`` and ``segmenter/<method>/segmenter.pt``. The model files
hold the architecture, class names and input normalisation, not the inference settings
(``segmenter.inference.{scales, flip}``, ``cams.{scales, flip, start_layer}``): those are the
config's, and the run records them in the logs of the jobs that used them,
``logs/predict_segmenter/<method>.log`` and ``logs/extract_cams/<method>/*.log``, in a line
that ``settings_text`` writes and ``parse_settings`` reads. Where a run has no such log the
schema's defaults apply (``INFERENCE_DEFAULTS``, ``CAMS_DEFAULTS``, checked against
``schemas/config.schema.yaml`` by the tests), and the log says so.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss_core.cli import UserError

log = logging.getLogger(__name__)

CLASSIFIER_FILE = Path("classifier") / "model.pt"
SEGMENTER_DIR = Path("segmenter")
SEGMENTER_FILE = "segmenter.pt"

# the schema's defaults of segmenter.inference and cams (tests/unit/test_runs.py checks them)
INFERENCE_DEFAULTS: dict[str, Any] = {"scales": [1.0], "flip": True}
CAMS_DEFAULTS: dict[str, Any] = {"scales": [1.0], "flip": False, "start_layer": 1}

_SETTINGS = re.compile(
    r"scales \[(?P<scales>[^\]]*)\], flip (?P<flip>True|False)(?:, start layer (?P<start>\d+))?"
)


def settings_text(scales: Sequence[float], flip: bool, start_layer: int | None = None) -> str:
    """``scales [1.0, 0.5], flip True[, start layer 1]``: how a job logs its settings."""
    text = f"scales {[float(s) for s in scales]}, flip {bool(flip)}"
    return text if start_layer is None else f"{text}, start layer {int(start_layer)}"


def parse_settings(text: str) -> dict[str, Any] | None:
    """The last ``settings_text`` in ``text`` as {scales, flip[, start_layer]}; None if none."""
    matches = list(_SETTINGS.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    settings: dict[str, Any] = {
        "scales": [float(s) for s in match["scales"].split(",") if s.strip()],
        "flip": match["flip"] == "True",
    }
    if match["start"] is not None:
        settings["start_layer"] = int(match["start"])
    return settings


def _logged(files: Sequence[Path], keys: Sequence[str]) -> tuple[dict[str, Any], Path] | None:
    for path in files:
        try:
            settings = parse_settings(path.read_text(errors="replace"))
        except OSError:
            continue
        if settings is not None and all(key in settings for key in keys):
            return settings, path
    return None


def resolve_settings(
    what: str,
    defaults: dict[str, Any],
    logs: Sequence[Path],
    given: dict[str, Any],
    run_dir: Path | None,
    hint: str = "",
) -> dict[str, Any]:
    """Settings ``what`` (a config section): the values ``given`` (options that are not None)
    over those the first of ``logs`` records, over ``defaults``; logs where they come from,
    with ``hint`` (how to choose others) when they are the defaults."""
    chosen = dict(defaults)
    recorded = _logged(logs, list(defaults))
    if recorded is not None:
        chosen.update({key: recorded[0][key] for key in defaults})
        source = f"as recorded by the run in {recorded[1]}"
    elif run_dir is not None:
        source = f"the config defaults: the run {run_dir} records no {what} settings (no job log)"
    else:
        source = "the config defaults, no run folder given"
    if recorded is None and hint:
        source = f"{source}; {hint}"
    options = {key: value for key, value in given.items() if value is not None}
    chosen.update(options)
    if options:
        source = f"options {', '.join(sorted(options))}; the rest {source}"
    described = ", ".join(f"{key} {chosen[key]}" for key in defaults)
    log.info("%s: %s (%s)", what, described, source)
    return chosen


def inference_settings(
    run_dir: Path | None, method: str | None, scales=None, flip=None
) -> dict[str, Any]:
    """segmenter.inference {scales, flip} of a run's predictions (see ``resolve_settings``)."""
    logs = []
    if run_dir is not None and method is not None:
        logs = [run_dir / "logs" / "predict_segmenter" / f"{method}.log"]
    given = {"scales": scales, "flip": flip}
    hint = "set --scales and --flip/--no-flip to use others"
    return resolve_settings("segmenter.inference", INFERENCE_DEFAULTS, logs, given, run_dir, hint)


def cams_settings(
    run_dir: Path | None, method: str, scales=None, flip=None, start_layer=None, hint: str = ""
) -> dict[str, Any]:
    """cams {scales, flip, start_layer} of a run's relevance maps: those its extract_cams jobs
    of ``method`` logged, else of any method (the settings are the same for all)."""
    logs: list[Path] = []
    if run_dir is not None:
        folder = run_dir / "logs" / "extract_cams"
        logs = sorted((folder / method).glob("*.log")) + sorted(folder.glob("*/*.log"))
    given = {"scales": scales, "flip": flip, "start_layer": start_layer}
    return resolve_settings("cams", CAMS_DEFAULTS, logs, given, run_dir, hint)


# --------------------------------------------------------------------------------------
# Model files


@dataclass(frozen=True)
class RunModels:
    """The model files to use, and the run folder they belong to (None for a bare file)."""

    segmenter: Path | None
    classifier: Path | None
    run_dir: Path | None
    method: str | None


def _run_folders(folder: Path) -> list[str]:
    """Names of the run folders directly in ``folder`` (e.g. ``results/``)."""
    return sorted(
        p.name for p in folder.iterdir()
        if p.is_dir() and ((p / CLASSIFIER_FILE).is_file() or (p / SEGMENTER_DIR).is_dir())
    )  # fmt: skip


def _not_a_run(folder: Path, what: str) -> UserError:
    runs = _run_folders(folder)
    if runs:
        hint = f"it holds the run folders {', '.join(runs)}: give one, e.g. {folder / runs[0]}"
    else:
        hint = "finish the run first (snakemake), or give the model file"
    return UserError(f"{folder} is not a finished run folder: it has no {what}; {hint}")


def run_of_segmenter(path: Path) -> Path | None:
    """The run folder of ``<run>/segmenter/<method>/segmenter.pt``, else None."""
    if path.parent.parent.name == SEGMENTER_DIR.name and path.parents[2].is_dir():
        return path.parents[2]
    return None


def segmenter_models(
    run_or_model: str | os.PathLike,
    method: str | None = None,
    classifier: str | os.PathLike | None = None,
) -> RunModels:
    """The segmenter of a run folder (``segmenter/<method>/segmenter.pt``; ``method`` picks
    one where the run trained several) or a segmenter file, and the classifier beside it
    (``classifier`` overrides; None when there is none)."""
    path = Path(run_or_model)
    if not path.exists():
        raise UserError(
            f"run folder or model file {path} does not exist; give a finished run folder "
            "(results/<run>) or a segmenter .pt file"
        )
    if path.is_dir():
        run_dir: Path | None = path
        found = sorted((path / SEGMENTER_DIR).glob(f"*/{SEGMENTER_FILE}"))
        if not found:
            raise _not_a_run(path, f"trained segmenter ({SEGMENTER_DIR}/<method>/{SEGMENTER_FILE})")
        methods = [p.parent.name for p in found]
        if method is None and len(found) > 1:
            raise UserError(
                f"{path} holds segmenters of several methods ({', '.join(methods)}); "
                "pick one with --method"
            )
        if method is not None and method not in methods:
            raise UserError(
                f"{path} has no segmenter of method '{method}' (it has {', '.join(methods)}); "
                "pick one of those with --method"
            )
        segmenter = found[methods.index(method)] if method is not None else found[0]
    else:
        segmenter = path
        run_dir = run_of_segmenter(path)
    classifier_file = Path(classifier) if classifier is not None else None
    if classifier_file is None and run_dir is not None and (run_dir / CLASSIFIER_FILE).is_file():
        classifier_file = run_dir / CLASSIFIER_FILE
    if classifier_file is not None and not classifier_file.is_file():
        raise UserError(f"classifier file {classifier_file} does not exist; check the path")
    method = segmenter.parent.name if run_dir is not None else None
    return RunModels(segmenter, classifier_file, run_dir, method)


def classifier_model(classifier_or_run: str | os.PathLike) -> RunModels:
    """The classifier of a run folder (``classifier/model.pt``) or a classifier file."""
    path = Path(classifier_or_run)
    if not path.exists():
        raise UserError(
            f"run folder or classifier file {path} does not exist; give a finished run folder "
            "(results/<run>) or a classifier model.pt"
        )
    if path.is_dir():
        if not (path / CLASSIFIER_FILE).is_file():
            raise _not_a_run(path, f"trained classifier ({CLASSIFIER_FILE})")
        return RunModels(None, path / CLASSIFIER_FILE, path, None)
    run_dir = path.parents[1] if path.parent.name == CLASSIFIER_FILE.parent.name else None
    return RunModels(None, path, run_dir, None)


def saved_model_kind(path: str | os.PathLike) -> str | None:
    """``classifier`` or ``segmenter`` for a model file the workflow saved (told apart by its
    stored config), None for anything else: to say so when one is given for the other."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        config = payload["model_config"]
    except Exception:  # noqa: BLE001 - not a model file of ours, whatever torch raised
        return None
    if not isinstance(config, dict):
        return None
    if "img_size" in config:
        return "classifier"
    if "aspp_channels" in config:
        return "segmenter"
    return None
