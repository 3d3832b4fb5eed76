# Validation of the config, paths, resources and the small functions every rule file uses.

import json
import time
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

# wsss_core (the library) lives beside this workflow: the checks below import it, and every
# job's shell gets it on PYTHONPATH (shell.prefix below)
if workflow.basedir not in sys.path:
    sys.path.append(workflow.basedir)
from wsss_core.config import check_config
from wsss_core.preflight import check_run

# every problem of the config, one line per key, before Snakemake's own validation (which stops
# at the first and dumps the schema); validate then fills in the schema's defaults
check_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")
validate(config, "../schemas/config.schema.yaml")

# Every rule's shell runs the workflow scripts as `$PY workflow_scripts/<script>.py`: the
# interpreter running Snakemake, unless --use-conda gives each rule envs/wsss.yaml. Each script
# takes `--log {log}` (wsss_core.cli.script_main): it writes its log there and, when it fails,
# prints the log's last line (its one-line error) beside Snakemake's failure summary.
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PY = "python" if USE_CONDA else shlex.quote(sys.executable)
# (the prefix is formatted like a rule's shell command: braces for the shell are doubled)
shell.prefix(
    f"set -euo pipefail; PY={PY}; "
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
CONDA_ENV = "../envs/wsss.yaml"
STARTED = time.monotonic()  # the run's wall time, printed at its end
RUN = config["run"]
RES = f"results/{RUN}"
TABLES = f"{RES}/tables"
DATA_CFG = config["data"]
TRAIN_SPLIT = DATA_CFG["train_split"]
EVAL_SPLIT = DATA_CFG["eval_split"]
CAM_METHODS = config["cams"]["methods"]
SEED_METHODS = config["seeds"]["methods"]
SEG_METHOD = config["segmenter"]["pseudo_method"]
RESOURCES = config["resources"]

# DATA_ROOT is the dataset folder: the scripts read it and the rules depend on it whole (made by
# make_synthetic, prepare_voc, prepare_coco or prepare_folder, or already there when prepared).
if DATA_CFG["source"] == "synthetic":
    DATA_ROOT = f"{RES}/data/synthetic"
elif DATA_CFG["source"] == "coco2014":
    DATA_ROOT = DATA_CFG["coco2014"]["root"]
elif DATA_CFG["source"] == "folder":
    DATA_ROOT = f"{RES}/data/folder"
else:
    DATA_ROOT = DATA_CFG["voc2012"]["root"]
# the paths, trees and method lists the schema cannot check (one line naming the key)
check_run(config, RES)


wildcard_constraints:
    method="[a-z_]+",
    scatteritem="[0-9]+-of-[0-9]+",
    split="[A-Za-z_]+",


scattergather:
    cams=config["cams"]["shards"],
    seeds=config["seeds"]["shards"],
    walk=config["walk"]["shards"],


def shard_args(wildcards) -> str:
    """`--shard I --num-shards N` of a scattered job: scatteritem 'i-of-N' is shard i - 1."""
    index, count = wildcards.scatteritem.split("-of-")
    return f"--shard {int(index) - 1} --num-shards {int(count)}"


def as_json(obj) -> str:
    """A config section as one shell-quoted JSON argument, `--config-json {params.cfg}`.

    As a params entry it is also the rule's rerun trigger: Snakemake records a mapping with
    its keys, so any change of any value reruns the rule (a set of bare numbers would not
    notice beta 8 -> 4 beside an alpha of 4; tests/workflow/test_reruns.py checks each stage)."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def section(name: str, *keys: str) -> str:
    """The keys of config section ``name`` that one rule reads, as `as_json` (the others are
    not its rerun trigger: seeds.shards or walk.ceiling_every change other jobs)."""
    return as_json({key: config[name][key] for key in keys})


def untracked(value):
    """A params value that is no rerun trigger (Snakemake does not record params computed
    from a job's input or output): where to fetch an archive whose checksum names it, and the
    device, which changes where a job computes, not what (switching `device` reruns nothing)."""
    return lambda wildcards, input: value


def out_dir(name: str = "model"):
    """A params function: the folder of output ``name`` (where a training writes its files)."""
    return lambda wildcards, output: str(Path(output[name]).parent)


def folder_files(wildcards) -> list[str]:
    """Every file of the user's folder that prepare_folder reads: a changed, added or removed
    image, mask or table reruns it (and what depends on it)."""
    root = Path(DATA_CFG["folder"]["path"])
    splits = dict.fromkeys([TRAIN_SPLIT, EVAL_SPLIT])
    files = [root / "classes.txt", *(root / f"{split}.csv" for split in splits)]
    for sub in ("images", "masks"):
        if (root / sub).is_dir():
            files += sorted(p for p in (root / sub).iterdir() if p.is_file())
    return [str(p) for p in files]


def log_path(rule: str, name: str = "all") -> str:
    return f"{RES}/logs/{rule}/{name}.log"


def bench_path(rule: str, name: str = "all") -> str:
    return f"{RES}/benchmarks/{rule}/{name}.tsv"


def gpu_resources(rule: str) -> dict:
    """mem_mb, runtime (minutes) and, for rules that can use one, gpu from config.resources.

    config.resources.rules.<rule>.gpu is the one list of GPU rules: a cluster profile asks
    for the GPUs that these resources name (resources.gpus_per_job each)."""
    spec = RESOURCES["rules"].get(rule, {})
    # a rule not listed, or listed with mem_mb / runtime null (the schema's defaults), takes
    # resources.default_mem_mb / default_runtime
    mem_mb, runtime = spec.get("mem_mb"), spec.get("runtime")
    res = {
        "mem_mb": RESOURCES["default_mem_mb"] if mem_mb is None else mem_mb,
        "runtime": RESOURCES["default_runtime"] if runtime is None else runtime,
    }
    if spec.get("gpu") and RESOURCES["gpus_per_job"] > 0:
        res["gpu"] = RESOURCES["gpus_per_job"]
    return res


def rule_threads(rule: str) -> int:
    """Threads of the jobs that train or run networks: config.resources.rules.<name>.threads,
    else resources.threads (on a few cores, two one-thread jobs side by side can beat one
    two-thread job; README, The demo)."""
    threads = RESOURCES["rules"].get(rule, {}).get("threads")
    return RESOURCES["threads"] if threads is None else threads


def final_targets() -> list[str]:
    """What a run makes: the tables (CSV, and HTML for the report), the figures."""
    targets = [
        f"{RES}/classifier/metrics.json",
        f"{TABLES}/cams_comparison.csv",
        f"{TABLES}/summary.csv",
        f"{TABLES}/summary_per_class.csv",
        f"{TABLES}/summary.html",
        f"{TABLES}/summary_per_class.html",
        f"{TABLES}/classifier_val_metrics.html",
        f"{TABLES}/cams_comparison.html",
        f"{RES}/figures/samples.png",
        f"{RES}/figures/samples_val.png",
        f"{RES}/figures/methods.png",
        f"{RES}/figures/training_curves.png",
        f"{RES}/figures/runtimes.png",
        f"{TABLES}/runtimes.html",
    ]
    return targets + ceiling_tables() + ceiling_tables(".html")


def ceiling_tables(suffix: str = ".csv") -> list[str]:
    """The walk_ceiling tables (``suffix`` .csv, or .html for the report), one per seeded
    method (none with walk.ceiling_every 0)."""
    if config["walk"]["ceiling_every"] == 0:
        return []
    return expand(f"{TABLES}/walk_ceiling_{{method}}{suffix}", method=SEED_METHODS)


# the stage name of each scored mask kind, as the tables and the summary show it
SEED_STAGE = "seeds"
WALK_STAGES = {"rw": "random walk", "rw_crf": "random walk + CRF"}
SEG_STAGES = {"seg": "segmenter", "seg_crf": "segmenter + CRF"}


def summary_inputs() -> list[str]:
    """The one-row summary of every scored stage, in pipeline order."""
    files = expand(f"{TABLES}/cams_{{method}}_summary.csv", method=CAM_METHODS)
    for method in SEED_METHODS:
        files.append(f"{TABLES}/seeds_{method}_summary.csv")
        files += expand(f"{TABLES}/walk_{method}_{{kind}}_summary.csv", kind=list(WALK_STAGES))
    files += expand(
        f"{TABLES}/segmenter_{{method}}_{{kind}}_summary.csv",
        method=[SEG_METHOD],
        kind=list(SEG_STAGES),
    )
    return files


def per_class_inputs() -> list[str]:
    return [f.replace("_summary.csv", ".csv") for f in summary_inputs()]


def run_end_message() -> str:
    """What the terminal shows when a run succeeds: its wall time, the summary table, where the
    logs are and how to get the HTML report."""
    minutes, seconds = divmod(round(time.monotonic() - STARTED), 60)
    summary = Path(TABLES) / "summary.md"
    lines = [f"wsss: run '{RUN}' finished in {minutes} min {seconds} s"]
    if summary.is_file():
        lines += [f"summary ({summary}):", summary.read_text().rstrip()]
    lines += [
        f"logs: {RES}/logs/<rule>/ (follow a running job with tail -f)",
        f"report: snakemake --report {RES}/report.html (make demo writes it)",
    ]
    return "\n".join(lines)
