"""The SLURM profile (profiles/slurm) on a real single-node SLURM started by the test.

The cluster (tests/support/slurm_cluster.py) runs munged, slurmctld and slurmd on loopback with a
generated slurm.conf and no accounting database; it has one stand-in GPU so that the
profile's GPU requests are scheduled as they are, not removed. A three-rule workflow runs
with ``--profile profiles/slurm`` and locally; the outputs must be equal, the two cluster
rules must have gone through sbatch (job ids in Snakemake's log, in the job-completion log,
in the plugin's per-job logs and in the jobs' own environment) with the resources the
profile and the rules ask for, and the local rule must not have.

The tiny end-to-end workflow (tests/configs/tiny.yaml, every stage in one shard) then runs
through the same cluster with the profile, as a user would run it: the rules that take seconds
(``localrules:``) in Snakemake's own process, every other job through sbatch with the
resources of the config, and every result equal to the local tiny run's (conftest.py).

The helper tests at the top need neither root nor SLURM.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest
import yaml
from slurm_cluster import (
    NODE,
    PARTITION,
    PROFILE,
    REPO,
    LocalSlurm,
    SlurmError,
    ensure_installed,
    gres_conf_text,
    node_memory_mb,
    parse_jobcomp,
    run_workflow,
    slurm_conf_text,
    slurm_jobs_by_rule,
    slurm_profile_args,
    start_local_slurm,
    submitted_job_ids,
    total_memory_mb,
)
from workflow_utils import (
    COCO_PRESET,
    TINY_CONFIG,
    VOC_PRESET,
    WorkflowRun,
    copy_workflow,
    expected_job_counts,
    load_yaml,
    local_rules,
    output,
    result_differences,
    run_config,
    scaled_timeout,
    tail,
    with_values,
    write_config,
)

# the rules that can use a GPU: named in one place, config.yaml's resources.rules.<rule>.gpu
GPU_RULES = {
    rule
    for rule, spec in load_yaml(REPO / "config.yaml")["resources"]["rules"].items()
    if spec.get("gpu", False)
}


# ---------------------------------------------------------------- helpers (no SLURM needed)


def test_slurm_conf_names_machine_loopback_and_no_accounting(tmp_path):
    text = slurm_conf_text(
        tmp_path,
        cpus=3,
        memory_mb=1234,
        ctld_port=40001,
        slurmd_port=40002,
        munge_socket=tmp_path / "m.sock",
        gpus=1,
    )
    conf = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert conf["SlurmctldHost"] == "localhost(127.0.0.1)"
    assert conf["SlurmctldPort"] == "40001" and conf["SlurmdPort"] == "40002"
    assert conf["AuthInfo"] == f"socket={tmp_path / 'm.sock'}"
    assert conf["AccountingStorageType"] == "accounting_storage/none"
    assert conf["StateSaveLocation"] == str(tmp_path / "state")
    node_line = next(line for line in text.splitlines() if line.startswith("NodeName="))
    assert node_line.split() == [
        f"NodeName={NODE}",
        "NodeAddr=127.0.0.1",
        "NodeHostname=localhost",
        "CPUs=3",
        "RealMemory=1234",
        "Gres=gpu:1",
        "State=UNKNOWN",
    ]
    assert f"PartitionName={PARTITION} Nodes={NODE} Default=YES" in text
    no_gpu = slurm_conf_text(
        tmp_path,
        cpus=1,
        memory_mb=500,
        ctld_port=1,
        slurmd_port=2,
        munge_socket=tmp_path / "m.sock",
        gpus=0,
    )
    assert "Gres=" not in no_gpu


def test_gres_conf_one_device_per_gpu():
    assert gres_conf_text(0) == ""
    assert gres_conf_text(2) == (
        f"NodeName={NODE} Name=gpu File=/dev/null\nNodeName={NODE} Name=gpu File=/dev/zero\n"
    )
    with pytest.raises(ValueError, match="gpus must be in"):
        gres_conf_text(4)


def test_node_memory_stays_below_the_machine(tmp_path):
    assert node_memory_mb(24105) == 21694  # 90 %
    assert node_memory_mb(2048) == 1536  # total - 512 MB is smaller
    assert node_memory_mb(300) == 256  # floor
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684092 kB\nMemFree:  1 kB\n")
    assert total_memory_mb(meminfo) == 24105
    meminfo.write_text("MemFree:  1 kB\n")
    with pytest.raises(SlurmError, match="MemTotal"):
        total_memory_mb(meminfo)


def test_parse_jobcomp_and_submission_lines():
    jobcomp = (
        "JobId=7 UserId=root(0) Name=abc JobState=COMPLETED TimeLimit=5 "
        "Tres=cpu=2,mem=300M,node=1,billing=2,gres/gpu=1 ReservationName= ExitCode=0:0\n"
        "JobId=8 UserId=root(0) Name=abc JobState=FAILED TimeLimit=60 ExitCode=1:0\n"
    )
    jobs = parse_jobcomp(jobcomp)
    assert set(jobs) == {"7", "8"}
    assert jobs["7"]["Tres"] == "cpu=2,mem=300M,node=1,billing=2,gres/gpu=1"
    assert jobs["7"]["ReservationName"] == ""
    assert jobs["8"]["JobState"] == "FAILED"
    log = (
        "Job 2 has been submitted with SLURM jobid 11 (log: /x/11.log).\n"
        "localrule download_voc:\n"
        "Job 0 has been submitted with SLURM jobid 12 (log: /x/12.log).\n"
    )
    assert submitted_job_ids(log) == {"2": "11", "0": "12"}


def test_profile_leaves_gpus_to_the_config_and_the_config_names_real_rules():
    """The GPU rules are listed once, in the config (resources.rules.<rule>.gpu): the rules
    ask for resources.gpus_per_job GPUs themselves, the profile repeats no rule names."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert profile["latency-wait"] >= 30
    assert "set-resources" not in profile
    assert all("gpu" not in str(v) for v in profile["default-resources"].values())
    assert GPU_RULES and "crf_seeds" not in GPU_RULES
    defined = set()
    for smk in (REPO / "rules").glob("*.smk"):
        defined |= set(re.findall(r"^ *rule (\w+):", smk.read_text(), flags=re.M))
    for configfile in (None, TINY_CONFIG, VOC_PRESET, COCO_PRESET):
        named = set(run_config(REPO, configfile)["resources"]["rules"])
        unknown = named - defined
        assert not unknown, f"resources.rules of {configfile} names no rule: {unknown}"


# ---------------------------------------------------------------- a real SLURM


@pytest.fixture(scope="module")
def local_slurm():
    """A running single-node SLURM (root only); stopped, with every process, afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM needs root (installs slurm-wlm/munge, runs slurmd as root)")
    ensure_installed()  # raises with apt's output if the install fails: no silent skip
    cluster = start_local_slurm(gpus=1)
    try:
        yield cluster
    finally:
        cluster.cleanup()
        assert cluster.cluster_processes() == []


MINI_SNAKEFILE = """
PY = {py!r}
localrules: download_voc


rule all:
    input:
        "results/summary.txt",


# a local rule (a download on the login node): never submitted
rule download_voc:
    output:
        "data/numbers.txt",
    log:
        "logs/download_voc.env",
    shell:
        "env > {{log}}; {{PY}} -c 'print(*range(1, 101), sep=chr(10))' > {{output}}"


# a CPU rule that names no resources: the profile's default-resources apply
rule make_labels:
    input:
        "data/numbers.txt",
    output:
        "results/squares.txt",
    log:
        "logs/make_labels.env",
    threads: 1
    shell:
        "env > {{log}}; {{PY}} -c 'import sys; "
        "[print(int(x) ** 2) for x in open(sys.argv[1])]' {{input}} > {{output}}"


# a GPU rule (its resources name the GPU, as the workflow's do with resources.gpus_per_job)
# with its own threads, mem and runtime
rule finetune_classifier:
    input:
        "results/squares.txt",
    output:
        "results/summary.txt",
    log:
        "logs/finetune_classifier.env",
    threads: 2
    resources:
        mem_mb=300,
        runtime=5,
        gpu=1,
    shell:
        "env > {{log}}; {{PY}} -c 'import sys; v = [int(x) for x in open(sys.argv[1])]; "
        "print(len(v), sum(v), {{threads}})' {{input}} > {{output}}"
"""


def write_mini_workflow(workdir: Path) -> None:
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(MINI_SNAKEFILE.format(py=shlex.quote(sys.executable)))


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def outputs(workdir: Path) -> dict[str, bytes]:
    files = [*(workdir / "data").rglob("*"), *(workdir / "results").rglob("*")]
    return {str(p.relative_to(workdir)): p.read_bytes() for p in files if p.is_file()}


@pytest.mark.slurm
@pytest.mark.slow
def test_profile_runs_workflow_through_sbatch_like_a_local_run(local_slurm: LocalSlurm, tmp_path):
    started = time.monotonic()
    # no accounting on this cluster: the profile's status checks must do without sacct
    sacct = local_slurm.run(["sacct", "-X"])
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr.lower()

    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    write_mini_workflow(local_dir)
    write_mini_workflow(slurm_dir)
    local_started = time.monotonic()
    local = run_workflow(local_dir, ["--cores", "2"])
    assert local.returncode == 0, local.stderr
    limit = scaled_timeout(time.monotonic() - local_started)
    slurm = run_workflow(slurm_dir, slurm_profile_args(), env=local_slurm.env, timeout=limit)
    detail = f"{slurm.stderr}\n{local_slurm.log_tail()}"
    assert slurm.returncode == 0, detail

    # the same results
    assert outputs(slurm_dir) == outputs(local_dir)
    assert (slurm_dir / "results/summary.txt").read_text() == "100 338350 2\n"

    # two jobs went through sbatch, the local rule did not
    log = slurm.stderr
    job_ids = submitted_job_ids(log)
    assert len(job_ids) == 2, detail
    rule_of = slurm_jobs_by_rule(slurm_dir)
    assert sorted(rule_of.values()) == ["finetune_classifier", "make_labels"]
    assert set(rule_of) == set(job_ids.values())
    assert "localrule download_voc:" in log
    assert "SLURM_JOB_ID" not in read_env(slurm_dir / "logs/download_voc.env")

    # SLURM itself saw the jobs finish (job-completion log, independent of sacct and squeue),
    # with what the profile and the rules asked for
    done = local_slurm.completed_jobs()
    for job_id, rule in rule_of.items():
        assert done[job_id]["JobState"] == "COMPLETED", done[job_id]
        assert done[job_id]["Partition"] == PARTITION
        assert read_env(slurm_dir / f"logs/{rule}.env")["SLURM_JOB_ID"] == job_id
    by_rule = {rule: done[job_id] for job_id, rule in rule_of.items()}
    shown = {rule: local_slurm.job_info(job_id) for job_id, rule in rule_of.items()}
    cpu_tres = dict(kv.split("=") for kv in shown["make_labels"]["TRES"].split(","))
    gpu_tres = dict(kv.split("=") for kv in shown["finetune_classifier"]["TRES"].split(","))
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    defaults = profile["default-resources"]
    assert by_rule["make_labels"]["TimeLimit"] == str(defaults["runtime"])  # profile default
    assert cpu_tres["mem"] == f"{defaults['mem_mb']}M" and cpu_tres["cpu"] == "1"
    assert "gpu" not in shown["make_labels"].get("TresPerJob", "")
    assert by_rule["finetune_classifier"]["TimeLimit"] == "5"  # the rule's own runtime
    assert gpu_tres["mem"] == "300M" and gpu_tres["cpu"] == "2"
    assert shown["finetune_classifier"]["TresPerJob"] == "gres:gpu:1"  # the rule's gpu=1
    gpu_env = read_env(slurm_dir / "logs/finetune_classifier.env")
    cpu_env = read_env(slurm_dir / "logs/make_labels.env")
    assert gpu_env["SLURM_GPUS_ON_NODE"] == "1" and "SLURM_GPUS_ON_NODE" not in cpu_env
    print(
        f"\nlocal SLURM start {local_slurm.startup_seconds:.1f} s; "
        f"local run + SLURM run {time.monotonic() - started:.1f} s"
    )


# ---------------------------------------------------------------- the tiny workflow on SLURM


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_workflow_through_slurm_equals_the_local_run(
    local_slurm: LocalSlurm, tiny_run: WorkflowRun, tmp_path
):
    """The tiny config, every stage in one shard (run tiny_slurm), with profiles/slurm:

    - the jobs of every rule but the local ones went through sbatch, one SLURM job each (job
      ids in Snakemake's log, in the plugin's per-job logs and in SLURM's job-completion log,
      all COMPLETED), with the threads (extract_cams and the walks their own), memory and time
      limit of the config's resources;
    - the local rules (``localrules:``: the cheap ones) ran in Snakemake's own process;
    - every result equals the local tiny run's exactly (conftest.py: relevance maps in one
      shard, seeds and random walk in two, which go one image at a time): the data, label
      tables, classifier weights and metrics, relevance-map stores, seeds, AffinityNet,
      pseudo masks, segmenter, predictions, every score table and the figures but the
      runtime one. Only logs, benchmarks and runtimes differ.
    """
    started = time.monotonic()
    workdir = copy_workflow(tmp_path / "workflow")
    config = with_values(
        load_yaml(workdir / TINY_CONFIG),
        {
            "run": "tiny_slurm",
            "cams.shards": 1,
            "seeds.shards": 1,
            "walk.shards": 1,
            "resources.gpus_per_job": 1,  # the GPU rules ask for the cluster's one GPU
        },
    )
    configfile = write_config(workdir, "tests/configs/tiny_slurm.yaml", config)
    proc = run_workflow(
        workdir, [*slurm_profile_args(), "--configfile", configfile], env=local_slurm.env,
        timeout=scaled_timeout(tiny_run.seconds),
    )  # fmt: skip
    log = output(proc)
    detail = f"{tail(log, 80)}\n{local_slurm.log_tail()}"
    assert proc.returncode == 0, detail
    seconds = time.monotonic() - started

    # which jobs went through sbatch: all but the local rules, one SLURM job each
    merged = run_config(workdir, configfile)  # config.yaml extended by the tiny config
    counts = expected_job_counts(merged)
    local = local_rules(workdir / "rules") | {"all"}
    cluster_counts = {rule: n for rule, n in counts.items() if rule not in local}
    # CPU jobs: the seeds' CRF, the maps' scoring and the sample figure (it runs the segmenter)
    # (export_voc_test, a GPU rule, is no target of `all`)
    expected = (GPU_RULES - {"export_voc_test"}) | {"crf_seeds", "eval_cams", "figure_samples"}
    assert set(cluster_counts) == expected
    submitted = submitted_job_ids(log)
    rule_of = slurm_jobs_by_rule(workdir)
    assert sorted(rule_of) == sorted(submitted.values()), detail
    assert {r: list(rule_of.values()).count(r) for r in set(rule_of.values())} == cluster_counts
    for rule in set(counts) & local - {"all"}:
        assert f"localrule {rule}:" in log, rule
    done = local_slurm.completed_jobs()
    assert {job_id: done[job_id]["JobState"] for job_id in rule_of} == dict.fromkeys(
        rule_of, "COMPLETED"
    )
    resources = merged["resources"]
    for job_id, rule in rule_of.items():
        spec = resources["rules"].get(rule, {})
        threads = 1  # the rules that run networks take resources.threads or their own
        if rule in GPU_RULES | {"figure_samples"}:
            threads = spec.get("threads") or resources["threads"]
        tres = dict(kv.split("=") for kv in local_slurm.job_info(job_id)["TRES"].split(","))
        assert tres["cpu"] == str(threads), (rule, tres)
        assert tres["mem"] == f"{spec.get('mem_mb', resources['default_mem_mb'])}M", (rule, tres)
        runtime = spec.get("runtime", resources["default_runtime"])
        assert done[job_id]["TimeLimit"] == str(runtime), (rule, done[job_id])

    # the same results as the local run
    assert result_differences(tiny_run.results, workdir / "results" / "tiny_slurm") == []
    print(
        f"\ntiny workflow on SLURM: {sum(cluster_counts.values())} sbatch jobs, "
        f"{sum(counts.values()) - sum(cluster_counts.values())} local jobs, {seconds:.0f} s "
        f"(local run {tiny_run.seconds:.0f} s)"
    )
