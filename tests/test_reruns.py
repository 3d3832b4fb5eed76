"""Reruns after a change, for real (not dry runs): on a copy of the finished tiny run, one
config value is changed and ``snakemake`` runs again with no manual step.

Each case checks what a user relies on when they rerun a stage by changing a setting:

- exactly the rule that takes the value and the rules downstream of it ran (Snakemake's log);
- the outputs that must change did change: the stage's own, and the network trained on them
  (a checkpoint of the old inputs or settings is never resumed);
- every output of a rule that did not run is byte-identical to before.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import WorkflowRun
from workflow_utils import (
    descendants,
    load_yaml,
    output,
    result_differences,
    rule_graph,
    snakemake,
    tail,
    with_values,
    write_config,
)

METHOD = "transformer_attribution"

# config key, new value, the rules that take it, outputs (under results/<run>) that must change
RERUNS = [
    (
        "segmenter.net.epochs",
        2,
        {"train_segmenter"},
        [f"segmenter/{METHOD}/segmenter.pt", f"segmenter/{METHOD}/history.csv"],
    ),
    (
        "walk.beta",
        4,
        {"random_walk", "walk_ceiling"},
        [
            f"walk/{METHOD}/rw",
            f"tables/walk_ceiling_{METHOD}.csv",
            f"segmenter/{METHOD}/segmenter.pt",
        ],
    ),
    (
        "seeds.alpha_low",
        2,
        {"crf_seeds"},
        [f"seeds/{METHOD}", f"affinity/{METHOD}/affinity.pt", f"walk/{METHOD}/rw"],
    ),
    (
        "classifier.lr",
        0.003,
        {"finetune_classifier"},
        ["classifier/model.pt", f"cams/{METHOD}.h5", f"affinity/{METHOD}/affinity.pt"],
    ),
    (
        "data.synthetic.seed",
        1,
        {"make_synthetic"},
        ["labels/train.csv", "classifier/model.pt", f"affinity/{METHOD}/affinity.pt"],
    ),
]

# written by every run whatever changed: logs, timings and the report figure of timings
RUN_SPECIFIC = ("logs/", "benchmarks/", "tables/runtimes.", "figures/runtimes.png")


def rules_that_ran(log: str) -> set[str]:
    """The rules of the jobs that a (real) Snakemake run executed, from its log."""
    return {
        line.split()[-1].rstrip(":")
        for line in log.splitlines()
        if line.startswith(("rule ", "localrule ")) and line.endswith(":")
    }


def outputs_by_rule(workdir: Path, configfile: str, results: Path) -> dict[str, str]:
    """{output path relative to results/<run>: the rule that writes it} (``--summary``)."""
    proc = snakemake(workdir, "--summary", "--configfile", configfile)
    assert proc.returncode == 0, tail(output(proc))
    prefix = f"{results.relative_to(workdir)}/"
    owners = {}
    for line in proc.stdout.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0].startswith(prefix):
            owners[fields[0][len(prefix) :]] = fields[2]
    return owners


def owner_of(rel: str, owners: dict[str, str]) -> str:
    """The rule that writes ``rel``: its own entry, that of the folder output holding it, or,
    for an undeclared file such as a training checkpoint (``classifier/checkpoints/last.pt``),
    the one rule whose outputs share its folder."""
    parts = Path(rel).parts
    for i in range(len(parts), 0, -1):
        candidate = "/".join(parts[:i])
        if candidate in owners:
            return owners[candidate]
    for i in range(len(parts) - 1, 0, -1):
        folder = "/".join(parts[:i]) + "/"
        rules = {rule for path, rule in owners.items() if path.startswith(folder)}
        if len(rules) == 1:
            return rules.pop()
    raise AssertionError(f"{rel} is written by no rule of the workflow")


@pytest.fixture(scope="module")
def graph(tiny_run: WorkflowRun) -> dict[str, set[str]]:
    return rule_graph(tiny_run.workdir, tiny_run.configfile)


@pytest.mark.slow
@pytest.mark.parametrize("key, value, rules, must_change", RERUNS, ids=[r[0] for r in RERUNS])
def test_changed_setting_recomputes_its_stage_and_descendants_for_real(
    tiny_run: WorkflowRun, graph, tmp_path, key, value, rules, must_change
):
    workdir = tmp_path / "workflow"
    shutil.copytree(tiny_run.workdir, workdir, symlinks=True)
    results = workdir / "results" / tiny_run.config["run"]
    before = tmp_path / "before"
    shutil.copytree(results, before, symlinks=True)
    owners = outputs_by_rule(workdir, tiny_run.configfile, results)

    config = with_values(load_yaml(workdir / tiny_run.configfile), {key: value})
    configfile = write_config(workdir, f"changed/{key}.yaml", config)
    proc = snakemake(workdir, "--cores", "2", "--configfile", configfile)
    log = output(proc)
    assert proc.returncode == 0, tail(log)

    expected = set(rules).union(*(descendants(graph, rule) for rule in rules))
    assert rules_that_ran(log) == expected

    # changed, new or removed files, e.g. "differs: classifier/model.pt"
    differences = result_differences(before, results, skip=RUN_SPECIFIC)
    changed = [d.split(": ", 1)[1] for d in differences]
    unexpected = sorted(rel for rel in changed if owner_of(rel, owners) not in expected)
    assert not unexpected, f"outputs of rules that did not run changed: {unexpected}"
    for rel in must_change:
        assert any(c == rel or c.startswith(f"{rel}/") for c in changed), f"{rel} is unchanged"
    assert "resuming" not in log.lower()
