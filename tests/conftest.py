"""Shared fixtures: the tiny end-to-end run of the workflow, done once per test session.

``tiny_run`` runs ``snakemake --cores 2 --configfile tests/configs/tiny.yaml`` (every stage on
a few dozen synthetic 64-px images, about a minute on 2 cores) in a copy of the workflow under
pytest's temporary folder. tests/test_workflow.py checks its outputs and reruns parts of it
with dry runs (which change nothing); tests/test_slurm.py compares a run through SLURM with it.
Only the tests that ask for it pay for it (they are marked ``slow``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from workflow_utils import TINY_CONFIG, copy_workflow, output, run_config, snakemake, tail


@dataclass(frozen=True)
class WorkflowRun:
    """A finished run: its working directory, config and Snakemake's output."""

    workdir: Path
    configfile: str  # relative to workdir
    config: dict[str, Any]  # config.yaml extended by configfile, as Snakemake sees it
    log: str  # Snakemake's stdout and stderr
    seconds: float

    @property
    def results(self) -> Path:
        return self.workdir / "results" / self.config["run"]


def run_tiny_workflow(workdir: Path, configfile: str = TINY_CONFIG) -> WorkflowRun:
    """Run the whole workflow locally on 2 cores in ``workdir`` (a copy of the workflow)."""
    started = time.monotonic()
    proc = snakemake(workdir, "--cores", "2", "--configfile", configfile)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        logs = sorted((workdir / "results").rglob("*.log"))
        newest = max(logs, key=lambda p: p.stat().st_mtime, default=None)
        detail = f"\n--- {newest}\n{tail(newest.read_text())}" if newest else ""
        pytest.fail(f"tiny workflow failed (exit {proc.returncode}):\n{tail(output(proc))}{detail}")
    return WorkflowRun(workdir, configfile, run_config(workdir, configfile), output(proc), seconds)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> WorkflowRun:
    """The tiny config run end to end, once per session, in its own copy of the workflow."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_run") / "workflow")
    return run_tiny_workflow(workdir)
