# Paths, helpers and resources shared by every rule file.

import json
import shlex
import sys
from pathlib import Path

import os

from snakemake.settings.types import DeploymentMethod

# Workflow scripts import wsss_core from this folder, whatever environment runs them.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH", "")) if p
)
# The interpreter running Snakemake, unless --use-conda gives each rule envs/wsss.yaml.
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PY = "python" if USE_CONDA else shlex.quote(sys.executable)
CONDA_ENV = "../envs/wsss.yaml"
RUN = config["run"]
RES = f"results/{RUN}"
TABLES = f"{RES}/tables"
DATA_CFG = config["data"]
TRAIN_SPLIT = DATA_CFG["train_split"]
EVAL_SPLIT = DATA_CFG["eval_split"]
CAM_METHODS = config["cams"]["methods"]
PSEUDO_METHODS = config["affinity"]["methods"]
SEG_METHOD = config["segmenter"]["pseudo_method"]
RESOURCES = config["resources"]
# Appended to every rule's shell command: the script writes its log; when it fails, the log's
# last line (the script's one-line error) is printed beside Snakemake's failure summary.
TO_LOG = "> {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}"

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
        net_weights = config[section]["net"].get(name, False)
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
    if workflow.basedir not in sys.path:
        sys.path.append(workflow.basedir)
    try:
        from wsss_core.classifier import ClassifierConfigError, check_patch_multiple
    except ImportError:
        return  # Snakemake's own environment has no torch (--use-conda): the rules check
    cls = config["classifier"]
    sizes = [("classifier.img_size", cls["img_size"])]
    net = config["affinity"]["net"]
    if net.get("backbone", "classifier") == "classifier" and net.get("crop_size") is not None:
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

for _m in PSEUDO_METHODS:
    if _m not in CAM_METHODS:
        raise ValueError(
            f"config key affinity.methods: '{_m}' is not among cams.methods {CAM_METHODS}; "
            "add it there or pick one of them"
        )
if SEG_METHOD not in PSEUDO_METHODS:
    raise ValueError(
        f"config key segmenter.pseudo_method: '{SEG_METHOD}' is not among affinity.methods "
        f"{PSEUDO_METHODS}"
    )

wildcard_constraints:
    method="[a-z_]+",
    scatteritem="[0-9]+-of-[0-9]+",
    split="[A-Za-z_]+",


scattergather:
    cams=config["cams"]["shards"],
    seeds=config["affinity"]["shards"],
    walk=config["random_walk"]["shards"],


def settings(**values) -> dict:
    """A rule's config values as one params entry; the shell reads them as {params.NAME[key]}.

    Snakemake records a job's params as an unordered set of their values, without names, and
    reruns a job when that set changes. With several numeric params a change can hide behind
    an equal value elsewhere: random_walk's values held 4 (logt) and 8 (alpha, beta), and
    beta 8 -> 4 left the set as it was, so nothing reran. A mapping is recorded with its
    keys, so any change of any value reruns the rule (tests/test_workflow.py checks each
    stage)."""
    return dict(values)


def as_json(obj) -> str:
    """A config section as one shell-quoted JSON argument (also a params: rerun trigger)."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def log_path(rule: str, name: str = "all") -> str:
    return f"{RES}/logs/{rule}/{name}.log"


def bench_path(rule: str, name: str = "all") -> str:
    return f"{RES}/benchmarks/{rule}/{name}.tsv"


def gpu_resources(rule: str) -> dict:
    """mem_mb, runtime (minutes) and, for rules that can use one, gpu from config.resources."""
    spec = RESOURCES["rules"].get(rule, {})
    res = {
        "mem_mb": spec.get("mem_mb", RESOURCES["default_mem_mb"]),
        "runtime": spec.get("runtime", RESOURCES["default_runtime"]),
    }
    if spec.get("gpu", False) and RESOURCES["gpus_per_job"] > 0:
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
    """The walk_ceiling tables, one per pseudo-mask method (none with ceiling_every 0)."""
    if config["random_walk"]["ceiling_every"] == 0:
        return []
    return expand(f"{TABLES}/walk_ceiling_{{method}}.csv", method=PSEUDO_METHODS)
