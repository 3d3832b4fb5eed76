# Validation of the config, paths, resources and the small functions every rule file uses.

import json
import os
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

# DATA_ROOT is the dataset folder the scripts read; DATA_TOKEN is what rules depend on: the
# whole folder, made by make_synthetic or prepare_voc (or already there when prepared).
if DATA_CFG["source"] == "synthetic":
    DATA_ROOT = f"{RES}/data/synthetic"
else:
    DATA_ROOT = DATA_CFG["voc2012"]["root"]
DATA_TOKEN = DATA_ROOT
if DATA_CFG["source"] == "voc2012" and not DATA_CFG["voc2012"]["prepared"]:
    if Path(DATA_ROOT).name != "VOC2012":
        raise ValueError(
            f"config key data.voc2012.root: '{DATA_ROOT}' must end in VOC2012 (the archive "
            "extracts to <parent>/VOC2012), or set data.voc2012.prepared: true"
        )



def check_config_paths() -> None:
    """Paths named in the config must exist before anything runs; the error names the key."""
    weights = config["classifier"]["pretrained"]
    if isinstance(weights, str) and weights != "hub" and not Path(weights).is_file():
        raise ValueError(
            f"config key classifier.pretrained: weights file '{weights}' does not exist; "
            "give a local weights file, 'hub' (needs network) or false"
        )
    # the AffinityNet's CNN weights are affinity.net.cnn_pretrained (its ViT backbone is the
    # classifier); the segmenter's backbone weights are segmenter.net.pretrained
    for key, section, name in (
        ("affinity.net.cnn_pretrained", "affinity", "cnn_pretrained"),
        ("segmenter.net.pretrained", "segmenter", "pretrained"),
    ):
        net_weights = config[section]["net"][name]
        if isinstance(net_weights, str) and net_weights != "hub" and not Path(net_weights).is_file():
            raise ValueError(
                f"config key {key}: weights file '{net_weights}' does not exist; "
                "give a local weights file, 'hub' (needs network) or false"
            )
    voc = DATA_CFG["voc2012"]
    if DATA_CFG["source"] == "voc2012" and voc["prepared"]:
        root = Path(voc["root"])
        if not root.is_dir():
            raise ValueError(
                f"config key data.voc2012.root: '{voc['root']}' is not a folder, but "
                "data.voc2012.prepared is true; point root at a prepared VOC2012 tree or set "
                "prepared: false to download and prepare it"
            )
        for key in ("train_split", "eval_split"):
            split_file = root / "ImageSets" / "Segmentation" / f"{DATA_CFG[key]}.txt"
            if not split_file.is_file():
                raise ValueError(
                    f"config key data.{key}: '{DATA_CFG[key]}' has no list {split_file} in the "
                    "prepared tree data.voc2012.root; name a split that exists there or set "
                    "data.voc2012.prepared: false to prepare the tree (train_aug included)"
                )


check_config_paths()


def check_patch_sizes() -> None:
    """A plain ViT classifier cuts its input into patches: classifier.img_size, and
    affinity.net.crop_size when the AffinityNet runs on the classifier, must be multiples of
    the patch size (classifier.patch_size, else the timm model's). Hybrids pass: their CNN
    stem makes the tokens (hybrid_tiny's stride is checked when it is built)."""
    if config["classifier"]["backbone"] == "hybrid_tiny":
        return  # nothing to check: spare the start-up the import of torch
    try:
        from wsss_core.classifier.model import ClassifierConfigError, check_patch_multiple
    except ImportError:
        return  # Snakemake's own environment has no torch (--use-conda): the rules check
    cls = config["classifier"]
    sizes = [("classifier.img_size", cls["img_size"])]
    net = config["affinity"]["net"]
    if net["backbone"] == "classifier" and net["crop_size"] is not None:
        sizes.append(("affinity.net.crop_size", net["crop_size"]))
    try:
        for key, size in sizes:
            check_patch_multiple(cls, size, key)
    except ClassifierConfigError as err:
        raise ValueError(str(err)) from None


def check_prepared_tree() -> None:
    """data.voc2012.prepared: true promises a tree the workflow only reads: its images, the
    masks of both splits (SegmentationClassAug for train_aug, see wsss_core.data.voc_prepare),
    and classes.txt where the tree cannot stand for VOC's 20 classes."""
    voc = DATA_CFG["voc2012"]
    if DATA_CFG["source"] != "voc2012" or not voc["prepared"]:
        return
    root = Path(voc["root"])
    fix = (
        f"complete the prepared tree data.voc2012.root '{voc['root']}', point root at a "
        "complete one, or set data.voc2012.prepared: false to download and prepare it"
    )
    if not (root / "JPEGImages").is_dir():
        raise ValueError(f"config key data.voc2012.root: {root / 'JPEGImages'} is missing; {fix}")
    for key in ("train_split", "eval_split"):
        split = DATA_CFG[key]
        folders = ["SegmentationClassAug"] if split == "train_aug" else [
            "SegmentationClass", "SegmentationClassAug"
        ]
        if not any((root / name).is_dir() for name in folders):
            raise ValueError(
                f"config key data.{key}: split '{split}' needs its masks in "
                f"{' or '.join(str(root / name) for name in folders)}, which is missing; {fix}"
            )
    if DATA_CFG["label_source"] == "xml" and not (root / "Annotations").is_dir():
        raise ValueError(
            f"config key data.label_source: 'xml' reads {root / 'Annotations'}, which is "
            f"missing; use label_source: masks, or {fix}"
        )
    voc_tree = (root / "Annotations").is_dir() or (root / "SegmentationClass").is_dir()
    if not voc_tree and not (root / "classes.txt").is_file():
        raise ValueError(
            f"config key data.voc2012.root: {root / 'classes.txt'} is missing (the class names, "
            f"one per line in label order); write it, or {fix}"
        )


def check_results_writable() -> None:
    """Everything a run writes goes under results/<run>: it (or, before the first run, its
    nearest existing parent) must be a folder this user can write into. Found here, before
    any job runs, rather than when the first output is written."""
    probe = Path(RES)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        problem = f"{probe} is not a folder"
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"no write permission on {probe}"
    else:
        return
    raise ValueError(
        f"{RES} is not writable ({problem}); fix its permissions or choose another run name "
        "(config key run)"
    )


check_patch_sizes()
check_prepared_tree()
check_results_writable()

for _m in SEED_METHODS:
    if _m not in CAM_METHODS:
        raise ValueError(
            f"config key seeds.methods: '{_m}' is not among cams.methods {CAM_METHODS}; "
            "add it there or pick one of them"
        )
if SEG_METHOD not in SEED_METHODS:
    raise ValueError(
        f"config key segmenter.pseudo_method: '{SEG_METHOD}' is not among seeds.methods "
        f"{SEED_METHODS}"
    )

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
    from a job's input or output): where to fetch an archive whose checksum names it."""
    return lambda wildcards, input: value


def out_dir(name: str = "model"):
    """A params function: the folder of output ``name`` (where a training writes its files)."""
    return lambda wildcards, output: str(Path(output[name]).parent)


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


def final_targets() -> list[str]:
    targets = [
        f"{RES}/classifier/metrics.json",
        f"{TABLES}/cams_comparison.csv",
        f"{TABLES}/summary.csv",
        f"{TABLES}/summary_per_class.csv",
        f"{RES}/figures/samples.png",
        f"{RES}/figures/training_curves.png",
        f"{RES}/figures/runtimes.png",
    ]
    return targets + ceiling_tables()


def ceiling_tables() -> list[str]:
    """The walk_ceiling tables, one per seeded method (none with walk.ceiling_every 0)."""
    if config["walk"]["ceiling_every"] == 0:
        return []
    return expand(f"{TABLES}/walk_ceiling_{{method}}.csv", method=SEED_METHODS)


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
