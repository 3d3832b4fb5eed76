"""Reruns after a change, on copies of the finished tiny run.

First what a change schedules (dry runs: a changed setting, ``--forcerun``, ``--until``); then
reruns for real: one config value is changed and ``snakemake`` runs again with no manual step.

Each case checks what a user relies on when they rerun a stage by changing a setting:

- exactly the rule that takes the value and the rules downstream of it ran (Snakemake's log);
- the outputs that must change did change: the stage's own, and the network trained on them
  (a checkpoint of the old inputs or settings is never resumed);
- every output of a rule that did not run is byte-identical to before.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from workflow_utils import (
    WorkflowRun,
    ancestors,
    descendants,
    job_counts,
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
        # the background exponent moves every walked map (the tiny run's one-epoch AffinityNet
        # hardly tells pixels apart: beta 4 or 2 for 8 changes one mask of 24, none after CRF)
        "walk.alpha",
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


# ============================================================ what a change schedules (dry runs)

# config key, new value, the rules that take it as a param (every other rule reruns only
# because it is downstream of one of them)
PARAM_CHANGES = [
    ("data.synthetic.seed", 1, {"make_synthetic"}),
    ("data.label_source", "xml", {"make_labels"}),
    ("classifier.lr", 0.002, {"finetune_classifier"}),
    ("cams.start_layer", 2, {"extract_cams"}),
    ("cams.eval.values", [0.3, 0.5], {"eval_cams"}),
    ("seeds.alpha_high", 16, {"crf_seeds"}),
    ("seeds.crf.iterations", 5, {"crf_seeds"}),
    ("affinity.net.epochs", 2, {"train_affinity"}),
    # beta 8 -> 4 with alpha 8 and logt 4: the set of param values {4, 8} stays the same
    ("walk.beta", 4, {"random_walk", "walk_ceiling"}),
    ("walk.normalise", False, {"random_walk", "walk_ceiling"}),
    ("walk.crf.iterations", 5, {"random_walk"}),
    ("walk.ceiling_every", 2, {"walk_ceiling"}),
    ("segmenter.net.epochs", 2, {"train_segmenter"}),
    # the sample figure predicts its train images with the same inference settings
    ("segmenter.inference.flip", False, {"predict_segmenter", "figure_samples"}),
    ("report.num_val_samples", 3, {"figure_samples"}),
    ("report.num_train_samples", 3, {"figure_samples", "figure_methods"}),
    ("seed", 1, {"finetune_classifier", "train_affinity", "train_segmenter"}),
]


def job_reasons(text: str) -> dict[str, set[str]]:
    """{rule: reasons of its jobs} from a dry run's job listing."""
    reasons: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        reason = re.search(r"^\s+reason: (.*)$", block, flags=re.M)
        if head and reason:
            reasons.setdefault(head.group(1), set()).add(reason.group(1))
    return reasons


@pytest.mark.slow
def test_nothing_reruns_when_nothing_changed(tiny_run: WorkflowRun):
    """A dry run of the finished run schedules no job."""
    proc = snakemake(tiny_run.workdir, "-n", "--configfile", tiny_run.configfile)
    assert proc.returncode == 0, tail(output(proc))
    assert job_counts(output(proc)) == {}
    assert "Nothing to be done" in output(proc)


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", "cuda:1"])
def test_choosing_a_device_reruns_nothing(tiny_run: WorkflowRun, device: str):
    """The device changes where a job computes, not what: no rerun trigger."""
    config = with_values(load_yaml(tiny_run.workdir / tiny_run.configfile), {"device": device})
    configfile = write_config(tiny_run.workdir, f"changed/device_{device}.yaml", config)
    proc = snakemake(tiny_run.workdir, "-n", "--configfile", configfile)
    assert proc.returncode == 0, tail(output(proc))
    assert job_counts(output(proc)) == {}


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, value, changed", PARAM_CHANGES, ids=[key for key, _, _ in PARAM_CHANGES]
)
def test_changed_parameter_reruns_its_stage_and_descendants_only(
    tiny_run: WorkflowRun, graph, key, value, changed
):
    """Changing one config value reruns the rules that take it as a param and the rules
    downstream of them in the rule graph, and no other rule; the reason of the first of them
    is the params change (Snakemake does not ask again for rules below a rerun)."""
    config = with_values(load_yaml(tiny_run.workdir / tiny_run.configfile), {key: value})
    configfile = write_config(tiny_run.workdir, f"changed/{key}.yaml", config)
    proc = snakemake(tiny_run.workdir, "-n", "--configfile", configfile)
    text = output(proc)
    assert proc.returncode == 0, tail(text)
    expected = set(changed)
    for rule in changed:
        expected |= descendants(graph, rule)
    assert set(job_counts(text)) == expected
    reasons = job_reasons(text)
    params_changed = {
        rule for rule, why in reasons.items() if any("Params have changed" in r for r in why)
    }
    assert params_changed == {r for r in changed if not ancestors(graph, r) & changed}


@pytest.mark.slow
def test_random_walk_change_leaves_upstream_alone(tiny_run: WorkflowRun, graph):
    """walk.beta: the random walk, both pseudo-mask kinds and their scores, the
    segmenter and the report rerun; the classifier, relevance maps, seeds (and their score)
    and the AffinityNet do not."""
    config = with_values(load_yaml(tiny_run.workdir / tiny_run.configfile), {"walk.beta": 2})
    configfile = write_config(tiny_run.workdir, "changed/beta2.yaml", config)
    proc = snakemake(tiny_run.workdir, "-n", "--configfile", configfile)
    counts = job_counts(output(proc))
    shards = tiny_run.config["walk"]["shards"]
    pseudo = len(tiny_run.config["seeds"]["methods"])
    assert counts == {
        "random_walk": pseudo * shards,
        "gather_walk": 2 * pseudo,
        "eval_walk": 2 * pseudo,  # rw and rw_crf; the seeds' score (eval_seeds) stays
        "train_segmenter": 1,
        "predict_segmenter": 1,
        "eval_segmenter": 2,
        "summary": 1,
        "report_tables": 1,
        "figure_samples": 1,
        "figure_curves": 1,
        "figure_runtimes": 1,
        "walk_ceiling": pseudo,
        "all": 1,
    }
    upstream = {"make_synthetic", "finetune_classifier", "extract_cams", "crf_seeds",
                "train_affinity", "eval_cams", "gather_seeds"}  # fmt: skip
    assert upstream <= ancestors(graph, "random_walk") | {"eval_cams"}
    assert not upstream & set(counts)


@pytest.mark.slow
def test_forcerun_reruns_the_rule_and_its_descendants_only(tiny_run: WorkflowRun, graph):
    """``--forcerun train_affinity`` schedules train_affinity and what is downstream of it."""
    proc = snakemake(
        tiny_run.workdir, "-n", "--configfile", tiny_run.configfile, "--forcerun", "train_affinity"
    )
    assert proc.returncode == 0, tail(output(proc))
    scheduled = set(job_counts(output(proc)))
    assert scheduled == {"train_affinity"} | descendants(graph, "train_affinity")
    assert not {"finetune_classifier", "extract_cams", "crf_seeds", "gather_seeds"} & scheduled


@pytest.mark.slow
def test_until_stops_at_the_named_rule(tiny_run: WorkflowRun, graph):
    """``--until eval_cams`` on a fresh run schedules eval_cams and what it needs, nothing
    downstream (no seeds, AffinityNet, segmenter or summary)."""
    proc = snakemake(
        tiny_run.workdir, "-n", "--configfile", tiny_run.configfile,
        "--config", "run=tiny_until", "--until", "eval_cams",
    )  # fmt: skip
    assert proc.returncode == 0, tail(output(proc))
    counts = job_counts(output(proc))
    assert set(counts) == {"eval_cams"} | ancestors(graph, "eval_cams")
    assert not set(counts) & ({"crf_seeds", "train_segmenter"} | descendants(graph, "eval_cams"))
    methods = len(tiny_run.config["cams"]["methods"])
    assert counts["eval_cams"] == counts["gather_cams"] == methods
    assert not (tiny_run.workdir / "results" / "tiny_until").exists()  # a dry run writes nothing
