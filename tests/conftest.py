"""Shared fixtures: the tiny end-to-end run of the workflow, done once per test session.

``tiny_run`` runs ``snakemake --cores 2 --configfile tests/configs/tiny.yaml`` (every stage on
a few dozen synthetic 64-px images, about a minute on 2 cores) in a copy of the workflow under
pytest's temporary folder. tests/workflow/test_e2e.py checks its outputs, test_reruns.py
reruns parts of it, test_slurm.py compares a run through SLURM with it.
Only the tests that ask for it pay for it (they are marked ``slow``).

The suite runs on two pytest-xdist workers, a test file's tests on one worker (``-n 2 --dist
loadfile`` in pyproject.toml), so a module fixture is built once; ``tiny_run`` is built once on
each worker that runs one of its files. (``--dist loadgroup`` would keep those files together,
but pytest-xdist 3.8 cannot set its group names under pytest 9: every test is scheduled alone.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from workflow_utils import (
    TINY_CONFIG,
    WorkflowRun,
    copy_workflow,
    output,
    run_config,
    snakemake,
    tail,
)


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


@pytest.fixture(scope="module")
def dry_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow for dry runs (nothing is ever run in it)."""
    return copy_workflow(tmp_path_factory.mktemp("dry_runs") / "workflow")
