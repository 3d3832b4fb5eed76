"""Helpers for the tests that run the Snakemake workflow itself (tests/workflow/ and the
end-to-end SLURM test in tests/workflow/test_slurm.py).

    workdir = copy_workflow(tmp_path / "wf")          # Snakefile, rules/, ... in a fresh folder
    proc = snakemake(workdir, "-n", "--configfile", TINY_CONFIG)
    job_counts(proc.stdout)                           # {"extract_cams": 4, ...} from "Job stats"
    graph = rule_graph(workdir, TINY_CONFIG)          # {rule: rules that consume its outputs}
    descendants(graph, "random_walk")

Every run happens in its own copy of the workflow: Snakemake locks its working directory, so
runs in the repository would collide with each other and with a demo running there, and a
copy leaves results/ of the repository alone. The copy holds no wsss_core: rules/common.smk
puts the copy on PYTHONPATH, and the package is installed in the virtualenv (editable), so
workflow scripts import the repository's wsss_core either way.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
# what a run of the workflow needs, relative to the repository root
WORKFLOW_PATHS = (
    "Snakefile",
    "rules",
    "schemas",
    "envs",
    "report",
    "workflow_scripts",
    "config.yaml",
    "configs",
    "profiles",
    "tests/configs",
    "scripts/make_example_folder.py",
)
TINY_CONFIG = "tests/configs/tiny.yaml"
VOC_PRESET = "configs/voc2012_vit_b16.yaml"
COCO_PRESET = "configs/coco2014_vit_b16.yaml"
JOB_STATS_ROW = re.compile(r"^(\w+)\s+(\d+)$")
RULEGRAPH_NODE = re.compile(r'^\s*(\d+)\[label = "(\w+)"')
RULEGRAPH_EDGE = re.compile(r"^\s*(\d+) -> (\d+)")


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


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow (WORKFLOW_PATHS that exist) from the repository into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in WORKFLOW_PATHS:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


# Time limits on Snakemake in tests are a guard against a hang, never a speed check: they hold
# on a machine three times slower than a quiet one (CI and users share their cores), or scale
# with a run measured on the same machine in the same session.
RUN_TIMEOUT = 1800.0


def scaled_timeout(measured_seconds: float, factor: float = 4.0, floor: float = 600.0) -> float:
    """A limit for work like a run measured here (``measured_seconds``), with room for a
    machine that slows down three times between the two."""
    return max(floor, factor * measured_seconds)


def snakemake(
    workdir: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess:
    """``python -m snakemake <args>`` in ``workdir`` with the tests' interpreter; text output.

    Snakemake writes its job table and dry-run listing to stdout and its progress log to
    stderr; ``output(proc)`` joins both."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=dict(env if env is not None else os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def output(proc: subprocess.CompletedProcess) -> str:
    """stdout and stderr of a finished Snakemake, for parsing and failure messages."""
    return f"{proc.stdout}\n{proc.stderr}"


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ----------------------------------------------------------------------------- configs


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, nested mappings merged key by key: what Snakemake does
    with ``configfile: config.yaml`` and ``--configfile <file>``."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def run_config(workdir: Path, configfile: str | None = None) -> dict[str, Any]:
    """The config a run sees: config.yaml, extended by ``configfile`` when given."""
    config = load_yaml(workdir / "config.yaml")
    return merge_config(config, load_yaml(workdir / configfile)) if configfile else config


def with_values(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` with dotted keys set: {"walk.beta": 4}."""
    changed = copy.deepcopy(dict(config))
    for dotted, value in values.items():
        *parents, last = dotted.split(".")
        node = changed
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return changed


def write_config(workdir: Path, name: str, config: Mapping[str, Any]) -> str:
    """Write ``config`` to ``<workdir>/<name>``; return the path relative to ``workdir``."""
    (workdir / name).parent.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return name


# ----------------------------------------------------------------------------- the DAG


def expected_job_counts(config: Mapping[str, Any]) -> dict[str, int]:
    """How many jobs of each rule a full run of ``config`` has, from the design (one job per
    method and shard, one per method, one per stage ...), written independently of rules/."""
    data = config["data"]
    cams, seeds, rw = config["cams"], config["seeds"], config["walk"]
    methods, pseudo = len(cams["methods"]), len(seeds["methods"])
    counts = {}
    if data["source"] == "synthetic":
        counts["make_synthetic"] = 1
    elif data["source"] == "coco2014":
        counts["download_coco"] = 3  # train2014, val2014, annotations_trainval2014
        counts["extract_coco"] = 3
        counts["convert_coco"] = data["coco2014"]["shards"]
        counts["prepare_coco"] = 1
    elif data["source"] == "folder":
        counts["prepare_folder"] = 1
    elif not data["voc2012"]["prepared"]:
        counts["download_voc"] = 1
        counts["download_sbd"] = int(data["voc2012"]["use_sbd"])
        counts["prepare_voc"] = 1
    counts.update(
        {
            "make_labels": len({data["train_split"], data["eval_split"]}),
            "finetune_classifier": 1,
            "extract_cams": methods * cams["shards"],
            "gather_cams": methods,
            "eval_cams": methods,
            "compare_cams": 1,
            "crf_seeds": pseudo * seeds["shards"],
            "gather_seeds": pseudo,
            "eval_seeds": pseudo,
            "train_affinity": pseudo,
            "random_walk": pseudo * rw["shards"],
            "gather_walk": 2 * pseudo,  # rw and rw_crf
            "eval_walk": 2 * pseudo,  # rw and rw_crf
            "train_segmenter": 1,
            "predict_segmenter": 1,
            "eval_segmenter": 2,  # seg, seg_crf
            "summary": 1,
            "report_tables": 1,
            "figure_samples": 1,
            "figure_methods": 1,
            "figure_curves": 1,
            "figure_runtimes": 1,
            "walk_ceiling": pseudo if rw["ceiling_every"] > 0 else 0,
            "all": 1,
        }
    )
    return {rule: n for rule, n in counts.items() if n}


def job_counts(text: str) -> dict[str, int]:
    """{rule: jobs} from the first "Job stats:" table of Snakemake's output; {} when nothing
    is to be done. Checked against the per-job blocks ("rule X:" / "localrule X:")."""
    lines = text.splitlines()
    if "Job stats:" not in lines:
        blocks = re.findall(r"^(?:local)?rule \w+:$", text, flags=re.M)
        assert not blocks, f"job blocks without a job table:\n{tail(text)}"
        return {}
    counts: dict[str, int] = {}
    total = None
    for line in lines[lines.index("Job stats:") + 3 :]:  # skip the header and the dashes
        match = JOB_STATS_ROW.match(line.strip())
        if match is None:
            break
        if match.group(1) == "total":
            total = int(match.group(2))
            break
        counts[match.group(1)] = int(match.group(2))
    assert total == sum(counts.values()), f"job table without a consistent total:\n{tail(text)}"
    return counts


def scheduled_rules(text: str) -> set[str]:
    """The rules of the jobs a (dry) run schedules."""
    return set(job_counts(text))


def rule_graph(workdir: Path, configfile: str, *args: str) -> dict[str, set[str]]:
    """{rule: rules that consume its outputs} from ``snakemake --rulegraph`` (every rule of the
    DAG, also when its jobs are up to date)."""
    proc = snakemake(workdir, "--rulegraph", "--configfile", configfile, *args, timeout=120)
    assert proc.returncode == 0, tail(output(proc))
    names: dict[str, str] = {}
    graph: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        if node := RULEGRAPH_NODE.match(line):
            names[node.group(1)] = node.group(2)
            graph.setdefault(node.group(2), set())
        elif edge := RULEGRAPH_EDGE.match(line):
            graph[names[edge.group(1)]].add(names[edge.group(2)])
    assert graph, f"no rule graph in:\n{tail(proc.stdout)}"
    return graph


def descendants(graph: Mapping[str, Iterable[str]], rule: str) -> set[str]:
    """Every rule downstream of ``rule`` (not ``rule`` itself)."""
    seen: set[str] = set()
    todo = list(graph[rule])
    while todo:
        nxt = todo.pop()
        if nxt not in seen:
            seen.add(nxt)
            todo.extend(graph[nxt])
    return seen


def ancestors(graph: Mapping[str, Iterable[str]], rule: str) -> set[str]:
    """Every rule upstream of ``rule`` (not ``rule`` itself)."""
    reverse: dict[str, set[str]] = {r: set() for r in graph}
    for parent, children in graph.items():
        for child in children:
            reverse[child].add(parent)
    return descendants(reverse, rule)


def local_rules(rules_dir: Path = REPO / "rules") -> set[str]:
    """Rules named in the ``localrules:`` blocks of rules/*.smk (one name per line)."""
    names: set[str] = set()
    for smk in rules_dir.glob("*.smk"):
        for block in re.findall(r"^localrules:\n((?:[ \t]+\w+,?[ \t]*\n)+)", smk.read_text(), re.M):
            names |= {line.strip().rstrip(",") for line in block.splitlines() if line.strip()}
    return names


# ----------------------------------------------------------------------------- outputs


def read_ids(list_file: Path) -> list[str]:
    return [line.strip() for line in Path(list_file).read_text().splitlines() if line.strip()]


def read_mask(path: Path) -> np.ndarray:
    """A label PNG (palette or grey) as its integer values."""
    with Image.open(path) as img:
        assert img.mode in ("P", "L"), f"{path} is a {img.mode} image, not a label image"
        return np.asarray(img)


def files_under(root: Path, skip: Iterable[str] = ()) -> dict[str, Path]:
    """{relative path: path} of the files under ``root``, leaving out relative paths that
    start with one of ``skip``."""
    skip = tuple(skip)
    return {
        str(p.relative_to(root)): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith(skip)
    }


def tensors_equal(a: Any, b: Any) -> bool:
    """Nested dicts / lists of tensors and plain values (a torch.save file), compared exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(tensors_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(tensors_equal, a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def h5_equal(a: Path, b: Path) -> bool:
    """Two HDF5 files with the same groups, attributes and datasets (values and dtypes), in
    any order of writing."""

    def attrs(node) -> dict:
        return {k: np.asarray(v).tolist() for k, v in node.attrs.items()}

    def same(x, y) -> bool:
        if attrs(x) != attrs(y):
            return False
        if isinstance(x, h5py.Dataset):
            return isinstance(y, h5py.Dataset) and tensors_equal(x[()], y[()])
        return sorted(x) == sorted(y) and all(same(x[k], y[k]) for k in x)

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        return same(fa, fb)


# what differs between two runs of the same config by nature: logs, timings, and the
# per-folder timestamps Snakemake leaves in directory outputs
RUN_SPECIFIC = ("logs/", "benchmarks/", "tables/runtimes.", "figures/runtimes.png")


def result_differences(a: Path, b: Path, skip: Iterable[str] = RUN_SPECIFIC) -> list[str]:
    """The files under two results folders that differ, compared exactly: bytes, or the
    tensors of .pt files (torch.save archives name their temporary file) and the content of
    .h5 stores. Empty when the runs agree."""
    fa = {k: v for k, v in files_under(a, skip).items() if not k.endswith(".snakemake_timestamp")}
    fb = {k: v for k, v in files_under(b, skip).items() if not k.endswith(".snakemake_timestamp")}
    diffs = [f"only in {a}: {rel}" for rel in sorted(fa.keys() - fb.keys())]
    diffs += [f"only in {b}: {rel}" for rel in sorted(fb.keys() - fa.keys())]
    for rel in sorted(fa.keys() & fb.keys()):
        if rel.endswith(".pt"):
            same = tensors_equal(
                torch.load(fa[rel], weights_only=True), torch.load(fb[rel], weights_only=True)
            )
        elif rel.endswith(".h5"):
            same = h5_equal(fa[rel], fb[rel])
        else:
            same = fa[rel].read_bytes() == fb[rel].read_bytes()
        if not same:
            diffs.append(f"differs: {rel}")
    return diffs


def load_script(name: str) -> ModuleType:
    """Import workflow_scripts/<name>.py by path (the folder is not a package)."""
    path = REPO / "workflow_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"wsss_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
