"""The Snakemake workflow itself: config checks, the DAG, a tiny end-to-end run, the report and
partial reruns.

Every Snakemake here runs in a copy of the workflow under pytest's temporary folder (see
workflow_utils.py), never in the repository.

- Config checks and dry runs (``snakemake -n``, about a second each) need no run: a bad config
  stops before anything runs, with a line naming the key; config.yaml, tests/configs/tiny.yaml
  and configs/voc2012_vit_b16.yaml resolve to the jobs the design asks for.
- The tiny end-to-end run (``tiny_run`` in conftest.py: 24 train and 8 val synthetic 64-px
  images, one epoch per network, about a minute) is done once per session; the tests marked
  ``slow`` check its outputs by value and rerun parts of it as dry runs, which change nothing.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import WorkflowRun
from jsonschema.validators import validator_for
from workflow_utils import (
    REPO,
    TINY_CONFIG,
    VOC_PRESET,
    ancestors,
    copy_workflow,
    descendants,
    expected_job_counts,
    job_counts,
    load_yaml,
    local_rules,
    output,
    read_ids,
    read_mask,
    rule_graph,
    run_config,
    snakemake,
    tail,
    tensors_equal,
    with_values,
    write_config,
)

SCHEMA = REPO / "schemas" / "config.schema.yaml"
IGNORE = 255

# The rule graph of the design (rule -> rules that read its outputs): data -> classifier ->
# cams (relevance maps) -> seeds -> affinity (AffinityNet) -> walk (random walk) -> segmenter,
# every stage scored, the scores summarised, figures drawn last.
EXPECTED_RULE_GRAPH = {
    "make_synthetic": {
        "make_labels", "finetune_classifier", "extract_cams", "eval_cams", "crf_seeds",
        "eval_seeds", "train_affinity", "random_walk", "eval_walk", "train_segmenter",
        "predict_segmenter", "eval_segmenter", "figure_samples", "walk_ceiling",
    },
    "make_labels": {"finetune_classifier", "extract_cams"},
    "finetune_classifier": {"extract_cams", "train_affinity", "figure_curves", "all"},
    "extract_cams": {"gather_cams"},
    "gather_cams": {"eval_cams", "crf_seeds", "random_walk", "figure_samples", "walk_ceiling"},
    "eval_cams": {"compare_cams", "summary"},
    "compare_cams": {"all"},
    "crf_seeds": {"gather_seeds"},
    "gather_seeds": {"train_affinity", "eval_seeds", "figure_samples"},
    "eval_seeds": {"summary"},
    "train_affinity": {"random_walk", "figure_curves", "walk_ceiling"},
    "random_walk": {"gather_walk"},
    "gather_walk": {"eval_walk", "train_segmenter", "figure_samples"},
    "eval_walk": {"summary"},
    "train_segmenter": {"predict_segmenter", "figure_curves"},
    "predict_segmenter": {"eval_segmenter", "figure_samples"},
    "eval_segmenter": {"summary"},
    "summary": {"figure_runtimes", "all"},
    "figure_samples": {"figure_runtimes", "all"},
    "figure_curves": {"figure_runtimes", "all"},
    "figure_runtimes": {"all"},
    "walk_ceiling": {"figure_runtimes", "all"},
    "all": set(),
}  # fmt: skip

# Rules that Snakemake runs itself under a cluster profile (no sbatch): the downloads need the
# login node's network, the others take seconds, less than a job's scheduling.
LOCAL_RULES = {
    "download_voc", "download_sbd", "make_synthetic", "make_labels", "gather_cams",
    "compare_cams", "gather_seeds", "eval_seeds", "gather_walk", "eval_walk", "eval_segmenter",
    "summary", "figure_samples", "figure_curves", "figure_runtimes",
}  # fmt: skip

# Keys of the classifier section that the model and input code read (wsss_core.classifier,
# workflow_scripts/classifier_train.py); the training keys are TrainConfig's fields.
CLASSIFIER_MODEL_KEYS = {
    "backbone", "img_size", "patch_size", "pretrained", "num_classes", "dynamic_img_size",
    "drop_path_rate", "mean", "std", "scale_range", "jitter",
}  # fmt: skip


# ============================================================ the schema (no Snakemake run)


def schema_section(*keys: str) -> dict:
    node = load_yaml(SCHEMA)
    for key in keys:
        node = node["properties"][key]
    return node


def schema_objects(node, path="") -> list[tuple[str, dict]]:
    """Every object schema (``type: object``) in ``node``, with where it is."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((path or "(top level)", node))
        for key, value in node.items():
            found += schema_objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += schema_objects(value, f"{path}/{i}")
    return found


def test_schema_lists_exactly_the_keys_the_code_reads():
    """The free-form sections (classifier, affinity.net, segmenter.net) name every key their
    code reads and no other, so a typo or a wrong type stops the run at start-up instead of
    being ignored or failing an hour later in a training job."""
    from wsss_core.affinity.net import AffinityNetConfig
    from wsss_core.affinity.train import AffinityTrainConfig
    from wsss_core.classifier.train import TrainConfig as ClassifierTrainConfig
    from wsss_core.segmenter.model import SegmenterConfig
    from wsss_core.segmenter.train import TrainConfig as SegmenterTrainConfig

    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    assert set(schema_section("classifier")["properties"]) == (
        names(ClassifierTrainConfig) | CLASSIFIER_MODEL_KEYS
    )
    # freeze_backbone is derived (backbone_lr_mult == 0), num_classes comes from the data
    assert set(schema_section("affinity", "net")["properties"]) == (
        names(AffinityNetConfig) - {"freeze_backbone"}
    ) | names(AffinityTrainConfig)
    assert set(schema_section("segmenter", "net")["properties"]) == (
        names(SegmenterConfig) - {"num_classes"}
    ) | names(SegmenterTrainConfig)


def test_schema_rejects_unknown_keys_everywhere():
    """Every object of the schema closes its key set (``additionalProperties: false``), except
    resources.rules, whose keys are rule names with a schema of their own."""
    open_objects = [
        path
        for path, node in schema_objects(load_yaml(SCHEMA))
        if node.get("additionalProperties") is not False
    ]
    assert open_objects == ["/properties/resources/properties/rules"]
    rules = schema_section("resources", "rules")["additionalProperties"]
    assert rules == {"$ref": "#/$defs/rule_resources"}


@pytest.mark.parametrize("configfile", [None, TINY_CONFIG, VOC_PRESET])
def test_config_files_match_the_schema(configfile):
    """config.yaml alone and each preset on top of it (as Snakemake merges them) are valid."""
    config = run_config(REPO, configfile)
    schema = load_yaml(SCHEMA)
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator_for(schema)(schema).iter_errors(config)
    ]
    assert errors == []


@pytest.mark.parametrize("configfile", [None, TINY_CONFIG, VOC_PRESET])
def test_config_sections_pass_the_codes_own_checks(configfile):
    """The training sections of config.yaml and each preset are accepted by the parsers their
    rules call (which reject unknown keys or bad values only when the job starts)."""
    from wsss_core.affinity.train import split_config
    from wsss_core.classifier.train import TrainConfig
    from wsss_core.segmenter.train import parse_config

    config = run_config(REPO, configfile)
    TrainConfig.from_dict(config["classifier"])
    split_config(config["affinity"]["net"])
    parse_config(config["segmenter"]["net"], num_classes=21)


# ============================================================ start-up checks (dry runs)


@pytest.fixture(scope="module")
def dry_workdir(tmp_path_factory) -> Path:
    """A copy of the workflow for dry runs (nothing is ever run in it)."""
    return copy_workflow(tmp_path_factory.mktemp("dry_runs") / "workflow")


BAD_CONFIGS = {
    # id: (changes to the tiny config, what the message must say)
    "wrong_type": (
        {"classifier.epochs": "ten"},
        ["config key classifier.epochs: 'ten' is not of type 'integer'"],
    ),
    "unknown_key": (
        {"cams.methodz": ["rollout"]},
        ["config key cams.methodz: unknown key (known keys under cams: eval, flip, methods,"],
    ),
    "unknown_cams_method": (
        {"cams.methods": ["transformer_attribution", "gradcam_pp"]},
        ["config key cams.methods[1]: 'gradcam_pp' is not one of ['transformer_attribution',"],
    ),
    "missing_voc_root": (
        {
            "data.source": "voc2012",
            "data.voc2012.prepared": True,
            "data.voc2012.root": "nowhere/VOC2012",
        },
        ["config key data.voc2012.root: 'nowhere/VOC2012' is not a folder"],
    ),
    "prepared_root_without_split_list": (
        {
            "data.source": "voc2012",
            "data.voc2012.prepared": True,
            "data.voc2012.root": "{tmp}/VOC2012",  # has ImageSets/Segmentation/val.txt only
            "data.train_split": "train_aug",
        },
        ["config key data.train_split: 'train_aug' has no list", "train_aug.txt"],
    ),
    "missing_classifier_weights": (
        {"classifier.pretrained": "weights/vit_base_patch16_224.safetensors"},
        ["config key classifier.pretrained: weights file", "does not exist"],
    ),
    "missing_affinity_cnn_weights": (
        {"affinity.net": {"backbone": "resnet18", "cnn_pretrained": "weights/resnet18.pth"}},
        ["config key affinity.net.cnn_pretrained: weights file 'weights/resnet18.pth'"],
    ),
    "unknown_affinity_net_key": (
        {"affinity.net": {"epoch": 2}},
        ["config key affinity.net.epoch: unknown key"],
    ),
    "segmenter_net_bad_value": (
        {"segmenter.net": {"output_stride": 32}},
        ["config key segmenter.net.output_stride: 32 is not one of [8, 16]"],
    ),
    "zero_shards": (
        {"walk.shards": 0},
        ["config key walk.shards: 0 is less than the minimum of 1"],
    ),
    "two_errors_at_once": (
        {"seed": -1, "report.num_val_samples": "4"},
        [
            "config key report.num_val_samples: '4' is not of type 'integer'",
            "config key seed: -1 is less than the minimum of 0",
        ],
    ),
    "pseudo_method_not_extracted": (
        {"seeds.methods": ["rollout", "full_lrp"]},
        ["config key seeds.methods: 'full_lrp' is not among cams.methods"],
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_stops_before_anything_runs(case, dry_workdir, tmp_path):
    """``snakemake -n`` with a bad config exits non-zero with one short line per problem that
    starts with the config key (not Snakemake's dump of the schema), before building the DAG."""
    changes, expected = BAD_CONFIGS[case]
    voc = tmp_path / "VOC2012" / "ImageSets" / "Segmentation"
    voc.mkdir(parents=True)
    (voc / "val.txt").write_text("2007_000033\n")
    changes = {
        k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v
        for k, v in changes.items()
    }
    config = with_values(load_yaml(dry_workdir / TINY_CONFIG), changes)
    configfile = write_config(dry_workdir, f"bad/{case}.yaml", config)
    proc = snakemake(dry_workdir, "-n", "--configfile", configfile, timeout=120)
    text = output(proc)
    assert proc.returncode != 0, tail(text)
    for line in expected:
        assert line in text, tail(text)
    assert "Failed validating" not in text  # the concise message, not the schema dump
    assert "Building DAG of jobs" not in text


def test_the_bad_configs_differ_from_a_good_one_only_in_their_keys(dry_workdir):
    """The base of the bad configs (the tiny config) passes the same dry run."""
    proc = snakemake(dry_workdir, "-n", "--configfile", TINY_CONFIG, timeout=120)
    assert proc.returncode == 0, tail(output(proc))


# ============================================================ the DAG (dry runs)


@pytest.mark.parametrize(
    "configfile", [None, TINY_CONFIG, VOC_PRESET], ids=["config.yaml", "tiny", "voc2012"]
)
def test_dry_run_schedules_one_job_per_method_shard_and_stage(configfile, dry_workdir):
    """The dry run of each config lists exactly the jobs of the design: one extract_cams job per
    method and shard, one crf_seeds / random_walk job per pseudo-mask method and shard, one
    gather and one eval job per method, the data rules of its data source, and so on."""
    args = ["--configfile", configfile] if configfile else []
    proc = snakemake(dry_workdir, "-n", *args, timeout=120)
    assert proc.returncode == 0, tail(output(proc))
    config = run_config(dry_workdir, configfile)
    counts = job_counts(output(proc))
    assert counts == expected_job_counts(config)
    cams, walk = config["cams"], config["walk"]
    assert counts["extract_cams"] == len(cams["methods"]) * cams["shards"]
    assert counts["random_walk"] == len(config["seeds"]["methods"]) * walk["shards"]
    if config["data"]["source"] == "voc2012":
        assert {"download_voc", "download_sbd", "prepare_voc"} <= set(counts)
        assert "make_synthetic" not in counts
    else:
        assert counts["make_synthetic"] == 1
        assert not {"download_voc", "download_sbd", "prepare_voc"} & set(counts)


def test_voc_preset_downloads_both_archives_and_prepares_train_aug(dry_workdir):
    """The VOC preset fetches VOC and SBD into data.voc2012.downloads with their checksums and
    trains on train_aug, the list prepare_voc writes."""
    config = run_config(dry_workdir, VOC_PRESET)
    voc = config["data"]["voc2012"]
    assert config["data"]["source"] == "voc2012" and not voc["prepared"] and voc["use_sbd"]
    assert config["data"]["train_split"] == "train_aug"
    proc = snakemake(dry_workdir, "-n", "-p", "--configfile", VOC_PRESET, timeout=120)
    text = output(proc)
    assert proc.returncode == 0, tail(text)
    assert f"--url {shlex.quote(voc['voc_url'])} --md5 {voc['voc_md5']}" in text
    assert f"--url {shlex.quote(voc['sbd_url'])} --md5 {voc['sbd_md5']}" in text
    assert f"--md5 {voc['voc_md5']} --out {voc['downloads']}/VOCtrainval_11-May-2012.tar" in text
    assert f"--md5 {voc['sbd_md5']} --out {voc['downloads']}/benchmark.tgz" in text
    # prepare_voc's output is the whole tree (what every stage depends on), extracted under
    # its parent; the run for real is tests/test_voc_preset.py
    assert f"output: {voc['root']}\n" in text
    assert f"--out {Path(voc['root']).parent} --no-progress" in text


def test_workflow_utils_parse_job_tables():
    """job_counts reads the first job table; an up-to-date run has none."""
    text = (
        "Job stats:\njob          count\n---------  -------\nextract_cams       4\n"
        "all                1\ntotal              5\n\nrule extract_cams:\n"
    )
    assert job_counts(text) == {"extract_cams": 4, "all": 1}
    assert job_counts("Nothing to be done (all requested files are present and up to date).") == {}


def test_rule_graph_is_the_designed_pipeline(dry_workdir):
    """``--rulegraph`` of the tiny config has exactly the edges of the design."""
    assert rule_graph(dry_workdir, TINY_CONFIG) == EXPECTED_RULE_GRAPH


@pytest.mark.parametrize("configfile", [TINY_CONFIG, VOC_PRESET], ids=["tiny", "voc2012"])
def test_lint_finds_nothing(configfile, dry_workdir):
    """``snakemake --lint``: no finding (every setting reaches a rule as input or params, one
    conda environment per rule, functions only in rules/common.smk, no path composed with +)."""
    proc = snakemake(dry_workdir, "--lint", "--configfile", configfile, timeout=120)
    text = output(proc)
    assert proc.returncode == 0, tail(text)
    assert "Congratulations, your workflow is in a good condition!" in text, tail(text)
    assert "Lints for" not in text, tail(text)


def test_config_errors_name_every_key_at_once(tmp_path):
    """wsss_core.config (what rules/common.smk runs first): one line per problem, each starting
    with the dotted config key; the renamed sections' old keys are unknown keys."""
    from wsss_core.config import config_errors, config_key

    assert config_key(["cams", "methods", 1]) == "cams.methods[1]"
    assert config_key([]) == "(top level)"
    config = run_config(REPO, TINY_CONFIG)
    assert config_errors(config, SCHEMA) == []
    config["random_walk"] = config.pop("walk")
    config["affinity"]["methods"] = config["seeds"]["methods"]
    errors = config_errors(config, SCHEMA)
    assert any(e.startswith("config key affinity.methods: unknown key") for e in errors), errors
    assert any(e.startswith("config key random_walk: unknown key") for e in errors), errors
    assert "config key walk: missing (required under (top level))" in errors


def test_cheap_rules_are_local_rules():
    """Under a cluster profile, the downloads and the rules that take seconds run in
    Snakemake's own process (their ``localrules:`` blocks); tests/test_slurm.py checks that
    they really go without sbatch and everything else with it."""
    assert local_rules() == LOCAL_RULES


# ============================================================ the tiny end-to-end run


@pytest.mark.slow
def test_tiny_run_completes_every_job(tiny_run: WorkflowRun):
    """Every job of the design ran, and the scattered shards (temp) are gone."""
    total = sum(expected_job_counts(tiny_run.config).values())
    assert f"{total} of {total} steps (100%) done" in tiny_run.log
    for shards in ("cams/shards", "seeds/shards", "walk/shards"):
        left = [p for p in (tiny_run.results / shards).rglob("*") if p.is_file()]
        assert left == [], f"temp shards left in {shards}"
    print(f"\ntiny run: {total} jobs in {tiny_run.seconds:.1f} s")


@pytest.mark.slow
def test_tiny_run_writes_every_stage(tiny_run: WorkflowRun):
    """Each stage's outputs exist and are not empty, with one log per job."""
    res, cfg = tiny_run.results, tiny_run.config
    seg = cfg["segmenter"]["pseudo_method"]
    expected = [
        "data/synthetic/classes.txt",
        "data/synthetic/ImageSets/Segmentation/train.txt",
        "data/synthetic/ImageSets/Segmentation/val.txt",
        "labels/train.csv",
        "labels/val.csv",
        "classifier/model.pt",
        "classifier/metrics.json",
        "classifier/val_metrics.csv",
        "classifier/history.csv",
        *(f"cams/{m}.h5" for m in cfg["cams"]["methods"]),
        *(f"tables/cams_{m}{s}" for m in cfg["cams"]["methods"] for s in (".csv", ".md",
                                                                          "_sweep.csv",
                                                                          "_summary.csv")),
        "tables/cams_comparison.csv",
        "tables/cams_comparison.md",
        *(f"affinity/{m}/{f}" for m in cfg["seeds"]["methods"]
          for f in ("affinity.pt", "history.csv")),
        *(f"tables/{name}{s}" for m in cfg["seeds"]["methods"]
          for name in (f"seeds_{m}", f"walk_{m}_rw", f"walk_{m}_rw_crf")
          for s in (".csv", ".md", "_summary.csv")),
        f"segmenter/{seg}/segmenter.pt",
        f"segmenter/{seg}/history.csv",
        *(f"tables/segmenter_{seg}_{k}{s}" for k in ("seg", "seg_crf")
          for s in (".csv", ".md", "_summary.csv")),
        "tables/summary.csv",
        "tables/summary.md",
        "tables/summary_per_class.csv",
        "tables/summary_per_class.md",
        "tables/runtimes.csv",
        *(f"tables/walk_ceiling_{m}{s}" for m in cfg["seeds"]["methods"]
          for s in (".csv", ".md")),
        "figures/samples.png",
        "figures/training_curves.png",
        "figures/runtimes.png",
    ]  # fmt: skip
    missing = [f for f in expected if not (res / f).is_file() or (res / f).stat().st_size == 0]
    assert missing == []
    logs = list((res / "logs").rglob("*.log"))
    assert len(logs) == sum(expected_job_counts(tiny_run.config).values()) - 1  # `all` has none
    # the runtime table: one row per benchmarked rule, counting all its jobs
    runtimes = pd.read_csv(res / "tables/runtimes.csv").set_index("rule")
    benchmarked = {d.name for d in (res / "benchmarks").iterdir()}
    assert set(runtimes.index) == benchmarked and "finetune_classifier" in benchmarked
    counts = expected_job_counts(tiny_run.config)
    assert runtimes["jobs"].to_dict() == {rule: counts[rule] for rule in benchmarked}
    assert (runtimes[["seconds", "max_rss_mb"]] > 0).all().all()


@pytest.mark.slow
def test_data_and_image_labels(tiny_run: WorkflowRun):
    """The synthetic set has the configured size and classes, and each image's labels are the
    classes present in its ground-truth mask (label_source: masks)."""
    root = tiny_run.results / "data/synthetic"
    syn = tiny_run.config["data"]["synthetic"]
    classes = read_ids(root / "classes.txt")
    assert len(classes) == syn["num_classes"]
    for split, n in (("train", syn["num_train"]), ("val", syn["num_val"])):
        ids = read_ids(root / f"ImageSets/Segmentation/{split}.txt")
        assert len(ids) == n == len(set(ids))
        table = pd.read_csv(tiny_run.results / f"labels/{split}.csv", dtype={"image_id": str})
        assert list(table.columns) == ["image_id", *classes]
        assert table["image_id"].tolist() == ids
        for row in table.itertuples(index=False):
            mask = read_mask(root / f"SegmentationClass/{row.image_id}.png")
            assert mask.shape == (syn["image_size"], syn["image_size"])
            present = {int(v) - 1 for v in np.unique(mask) if 0 < v <= len(classes)}
            assert {c for c in range(len(classes)) if row[c + 1] == 1} == present, row.image_id
            assert set(row[1:]) <= {0, 1}


@pytest.mark.slow
def test_classifier_metrics_agree(tiny_run: WorkflowRun):
    """metrics.json, val_metrics.csv (percent) and history.csv tell the same numbers."""
    out = tiny_run.results / "classifier"
    metrics = json.loads((out / "metrics.json").read_text())
    classes = read_ids(tiny_run.results / "data/synthetic/classes.txt")
    assert set(metrics["per_class_AP"]) == set(classes)
    assert 0 <= metrics["mAP"] <= 1
    assert metrics["mAP"] == pytest.approx(np.mean(list(metrics["per_class_AP"].values())))
    assert metrics["epochs"] == tiny_run.config["classifier"]["epochs"]
    assert metrics["num_val_images"] == tiny_run.config["data"]["synthetic"]["num_val"]
    table = pd.read_csv(out / "val_metrics.csv").set_index("class")
    assert list(table.index) == [*classes, "mean"]
    for name in classes:
        assert table.loc[name, "AP"] == pytest.approx(100 * metrics["per_class_AP"][name])
        assert table.loc[name, "F1"] == pytest.approx(100 * metrics["per_class_F1"][name])
    assert table.loc["mean", "AP"] == pytest.approx(100 * metrics["mAP"])
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(1, tiny_run.config["classifier"]["epochs"] + 1))
    assert history["val_mAP"].iloc[-1] == pytest.approx(metrics["mAP"])
    for stage in ("affinity", "segmenter"):
        method = tiny_run.config["segmenter"]["pseudo_method"]
        epochs = tiny_run.config[stage]["net"]["epochs"]
        assert len(pd.read_csv(tiny_run.results / f"{stage}/{method}/history.csv")) == epochs


@pytest.mark.slow
def test_cam_stores_hold_one_group_per_train_image(tiny_run: WorkflowRun):
    """Each method's HDF5 store has one group per train image with one finite map per class
    present in the image (the label table's classes) and the image's size."""
    res = tiny_run.results
    labels = pd.read_csv(res / "labels/train.csv", dtype={"image_id": str}).set_index("image_id")
    size = tiny_run.config["data"]["synthetic"]["image_size"]
    for method in tiny_run.config["cams"]["methods"]:
        with h5py.File(res / f"cams/{method}.h5", "r") as store:
            assert store.attrs["method"] == method
            assert store.attrs["format"] == "wsss-cam-store"
            assert sorted(store) == sorted(labels.index)
            for image_id, group in store.items():
                classes = [int(c) for c in group.attrs["classes"]]
                assert classes == [int(c) for c in np.flatnonzero(labels.loc[image_id] == 1)]
                maps = group["maps"][()]
                assert maps.ndim == 3 and maps.shape[0] == len(classes)
                assert np.isfinite(maps).all() and np.abs(maps).max() <= 1  # stored / scale
                assert list(group.attrs["image_size"]) == [size, size]
                assert (group.attrs["scales"] > 0).all()


@pytest.mark.slow
def test_masks_cover_every_image_with_valid_labels(tiny_run: WorkflowRun):
    """Seeds and random-walk pseudo masks: one PNG per train image, values in {0..C, 255},
    and only background, the image's own classes or 255 (unsure). Segmenter predictions: one
    PNG per val image with values in {0..C}."""
    res, cfg = tiny_run.results, tiny_run.config
    size = cfg["data"]["synthetic"]["image_size"]
    num_classes = cfg["data"]["synthetic"]["num_classes"]
    labels = pd.read_csv(res / "labels/train.csv", dtype={"image_id": str}).set_index("image_id")
    val_ids = read_ids(res / "data/synthetic/ImageSets/Segmentation/val.txt")
    for method in cfg["seeds"]["methods"]:
        for folder in (f"seeds/{method}", f"walk/{method}/rw", f"walk/{method}/rw_crf"):
            pngs = sorted((res / folder).glob("*.png"))
            assert [p.stem for p in pngs] == sorted(labels.index), folder
            values = set()
            for png in pngs:
                mask = read_mask(png)
                assert mask.shape == (size, size)
                allowed = {0, IGNORE} | {c + 1 for c in np.flatnonzero(labels.loc[png.stem] == 1)}
                assert set(np.unique(mask).tolist()) <= allowed, png
                values |= set(np.unique(mask).tolist())
            assert values <= {*range(num_classes + 1), IGNORE}
            assert values - {0, IGNORE}, f"{folder} has no foreground at all"
    seg = cfg["segmenter"]["pseudo_method"]
    for kind in ("seg", "seg_crf"):
        pngs = sorted((res / f"predictions/{seg}/{kind}").glob("*.png"))
        assert [p.stem for p in pngs] == sorted(val_ids)
        for png in pngs:
            mask = read_mask(png)
            assert mask.shape == (size, size)
            assert set(np.unique(mask).tolist()) <= set(range(num_classes + 1))


def expected_summary_rows(config) -> list[tuple[str, str, str]]:
    """(stage, method, split) of every summary row, in order."""
    rows = [("relevance map", m, "train") for m in config["cams"]["methods"]]
    for m in config["seeds"]["methods"]:
        rows += [(stage, m, "train") for stage in ("seeds", "random walk", "random walk + CRF")]
    seg = config["segmenter"]["pseudo_method"]
    rows += [("segmenter", seg, "val"), ("segmenter + CRF", seg, "val")]
    return rows


def stage_tables(config) -> list[str]:
    """The per-stage table names (tables/<name>_summary.csv, tables/<name>.csv) in the order
    of expected_summary_rows."""
    names = [f"cams_{m}" for m in config["cams"]["methods"]]
    for m in config["seeds"]["methods"]:
        names += [f"seeds_{m}", f"walk_{m}_rw", f"walk_{m}_rw_crf"]
    seg = config["segmenter"]["pseudo_method"]
    return names + [f"segmenter_{seg}_seg", f"segmenter_{seg}_seg_crf"]


@pytest.mark.slow
def test_summary_has_a_row_per_stage_and_method_equal_to_the_stage_tables(tiny_run: WorkflowRun):
    """summary.csv: one row per stage x method (relevance map per cams method, seeds, random
    walk, random walk + CRF, segmenter, segmenter + CRF), scores in [0, 100], each row equal
    to the stage's own summary table, its mIoU the mean of the per-class IoU table (classes
    absent from prediction and truth left out), and summary_per_class.csv the per-class
    tables side by side."""
    tables = tiny_run.results / "tables"
    summary = pd.read_csv(tables / "summary.csv")
    rows = expected_summary_rows(tiny_run.config)
    assert list(summary[["stage", "method", "split"]].itertuples(index=False, name=None)) == rows
    scores = ["mIoU", "mean_precision", "mean_recall", "pixel_accuracy"]
    assert summary[scores].notna().all().all()
    assert ((summary[scores] >= 0) & (summary[scores] <= 100)).all().all()
    per_class_summary = pd.read_csv(tables / "summary_per_class.csv").set_index("class")
    classes = ["background", *read_ids(tiny_run.results / "data/synthetic/classes.txt")]
    assert list(per_class_summary.index) == classes
    for (stage, method, split), name, (_, row) in zip(
        rows, stage_tables(tiny_run.config), summary.iterrows(), strict=True
    ):
        own = pd.read_csv(tables / f"{name}_summary.csv")
        assert len(own) == 1, name
        for column in own.columns:
            mine, theirs = own[column].iloc[0], row[column]
            assert mine == theirs or (pd.isna(mine) and pd.isna(theirs)), (name, column)
        per_class = pd.read_csv(tables / f"{name}.csv").set_index("class")
        assert list(per_class.index) == classes
        assert ((per_class.fillna(0) >= 0) & (per_class.fillna(0) <= 100)).all().all()
        assert row["mIoU"] == pytest.approx(np.nanmean(per_class["IoU"]), abs=1e-9), name
        column = f"{stage} ({method}, {split})"
        np.testing.assert_array_equal(per_class_summary[column], per_class["IoU"])
    assert (tables / "summary.md").read_text().count("\n|") >= len(rows)


@pytest.mark.slow
def test_cams_comparison_uses_each_methods_best_threshold(tiny_run: WorkflowRun):
    """The relevance-map row of each method is the best background threshold of its sweep
    (the config's eval.values), and cams_comparison.csv repeats it with per-class IoU, one
    row per method, best mIoU first."""
    tables = tiny_run.results / "tables"
    cams = tiny_run.config["cams"]
    summary = pd.read_csv(tables / "summary.csv").set_index(["stage", "method"])
    comparison = pd.read_csv(tables / "cams_comparison.csv").set_index("method")
    assert sorted(comparison.index) == sorted(cams["methods"])
    assert comparison["mIoU"].is_monotonic_decreasing
    for method in cams["methods"]:
        sweep = pd.read_csv(tables / f"cams_{method}_sweep.csv")
        assert sweep["threshold"].tolist() == pytest.approx(cams["eval"]["values"])
        best = sweep.loc[sweep["mIoU"].idxmax()]
        row = summary.loc[("relevance map", method)]
        assert row["mIoU"] == best["mIoU"] == comparison.loc[method, "mIoU"]
        assert row["threshold"] == best["threshold"] == comparison.loc[method, "threshold"]
        per_class = pd.read_csv(tables / f"cams_{method}.csv").set_index("class")["IoU"]
        for name, iou in per_class.items():
            assert comparison.loc[method, name] == iou


REPORTED = {
    # file under results/<run>/ -> mime type in the report
    "tables/summary.csv": "text/csv",
    "tables/summary_per_class.csv": "text/csv",
    "tables/cams_comparison.csv": "text/csv",
    "classifier/val_metrics.csv": "text/csv",
    "tables/runtimes.csv": "text/csv",
    "figures/samples.png": "image/png",
    "figures/training_curves.png": "image/png",
    "figures/runtimes.png": "image/png",
}


def report_entries(html: str, run: str) -> dict[str, dict]:
    """The report's record of each result file, {path under results/<run>/: record}."""
    decoder = json.JSONDecoder()
    entries = {}
    for match in re.finditer(rf'"results/{re.escape(run)}/([^"]+)": \{{', html):
        record, _ = decoder.raw_decode(html, match.end() - 1)
        if isinstance(record, dict) and "data_uri" in record:
            entries[match.group(1)] = record
    return entries


@pytest.mark.slow
def test_report_is_one_self_contained_html_with_the_tables_and_figures(
    tiny_run: WorkflowRun, tmp_path
):
    """``snakemake --report`` writes one HTML file that loads nothing from elsewhere and holds
    the summary table, the other tables and every figure byte for byte (as data URIs)."""
    report = tmp_path / "report.html"
    proc = snakemake(tiny_run.workdir, "--configfile", tiny_run.configfile, "--report", str(report))
    assert proc.returncode == 0, tail(output(proc))
    html = report.read_text()
    assert not re.search(
        r"<script[^>]+src=|<link[^>]+href=\"?https?:|<img[^>]+src=\"?https?:", html
    )
    entries = report_entries(html, tiny_run.config["run"])
    assert set(REPORTED) <= set(entries)
    for rel, mime in REPORTED.items():
        uri = entries[rel]["data_uri"]
        assert uri.startswith(f"data:{mime};"), rel
        embedded = base64.b64decode(uri.split("base64,", 1)[1])
        assert embedded == (tiny_run.results / rel).read_bytes(), rel
    # the workflow description (report/workflow.rst) names the run
    assert f"wsss run <strong>{tiny_run.config['run']}</strong>" in html


@pytest.mark.slow
def test_training_is_reproducible(tiny_run: WorkflowRun, tmp_path):
    """The classifier and the AffinityNet trained again with the rule's arguments (same seed,
    same threads, same machine) give the same weights and the same history and metrics, to
    the bit: "the same config on the same machine gives the same tables"."""
    cfg, res = tiny_run.config, f"results/{tiny_run.config['run']}"
    common = [
        "--seed", str(cfg["seed"]), "--threads", str(cfg["resources"]["threads"]),
        "--device", cfg["device"], "--data-root", f"{res}/data/synthetic",
    ]  # fmt: skip
    method = cfg["seeds"]["methods"][0]
    runs = {
        "classifier": [
            "workflow_scripts/classifier_train.py", *common,
            "--train-labels", f"{res}/labels/train.csv", "--val-labels", f"{res}/labels/val.csv",
            "--config-json", json.dumps(cfg["classifier"], sort_keys=True),
        ],
        f"affinity/{method}": [
            "workflow_scripts/affinity_train.py", *common,
            "--classifier", f"{res}/classifier/model.pt", "--seeds", f"{res}/seeds/{method}",
            "--split", cfg["data"]["train_split"],
            "--config-json", json.dumps(cfg["affinity"]["net"], sort_keys=True),
        ],
    }  # fmt: skip
    for stage, args in runs.items():
        again = tmp_path / stage
        proc = subprocess.run(
            [sys.executable, *args, "--out-dir", str(again)],
            cwd=tiny_run.workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
        first = tiny_run.results / stage
        for name in ("history.csv", "metrics.json", "val_metrics.csv"):
            if (first / name).exists():
                assert (again / name).read_bytes() == (first / name).read_bytes(), (stage, name)
        weights = "model.pt" if stage == "classifier" else "affinity.pt"
        assert tensors_equal(
            torch.load(again / weights, weights_only=True),
            torch.load(first / weights, weights_only=True),
        ), f"{stage}/{weights} differs"


# ============================================================ partial reruns (dry runs)

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
    ("walk.crf.iterations", 5, {"random_walk"}),
    ("walk.ceiling_every", 2, {"walk_ceiling"}),
    ("segmenter.net.epochs", 2, {"train_segmenter"}),
    ("segmenter.inference.flip", False, {"predict_segmenter"}),
    ("report.num_val_samples", 3, {"figure_samples"}),
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


@pytest.fixture(scope="module")
def tiny_graph(tiny_run: WorkflowRun) -> dict[str, set[str]]:
    """The rule graph of the finished tiny run."""
    return rule_graph(tiny_run.workdir, tiny_run.configfile)


@pytest.mark.slow
def test_nothing_reruns_when_nothing_changed(tiny_run: WorkflowRun):
    """A dry run of the finished run schedules no job."""
    proc = snakemake(tiny_run.workdir, "-n", "--configfile", tiny_run.configfile)
    assert proc.returncode == 0, tail(output(proc))
    assert job_counts(output(proc)) == {}
    assert "Nothing to be done" in output(proc)


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, value, changed", PARAM_CHANGES, ids=[key for key, _, _ in PARAM_CHANGES]
)
def test_changed_parameter_reruns_its_stage_and_descendants_only(
    tiny_run: WorkflowRun, tiny_graph, key, value, changed
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
        expected |= descendants(tiny_graph, rule)
    assert set(job_counts(text)) == expected
    reasons = job_reasons(text)
    params_changed = {
        rule for rule, why in reasons.items() if any("Params have changed" in r for r in why)
    }
    assert params_changed == {r for r in changed if not ancestors(tiny_graph, r) & changed}


@pytest.mark.slow
def test_random_walk_change_leaves_upstream_alone(tiny_run: WorkflowRun, tiny_graph):
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
        "figure_samples": 1,
        "figure_curves": 1,
        "figure_runtimes": 1,
        "walk_ceiling": pseudo,
        "all": 1,
    }
    upstream = {"make_synthetic", "finetune_classifier", "extract_cams", "crf_seeds",
                "train_affinity", "eval_cams", "gather_seeds"}  # fmt: skip
    assert upstream <= ancestors(tiny_graph, "random_walk") | {"eval_cams"}
    assert not upstream & set(counts)


@pytest.mark.slow
def test_forcerun_reruns_the_rule_and_its_descendants_only(tiny_run: WorkflowRun, tiny_graph):
    """``--forcerun train_affinity`` schedules train_affinity and what is downstream of it."""
    proc = snakemake(
        tiny_run.workdir, "-n", "--configfile", tiny_run.configfile, "--forcerun", "train_affinity"
    )
    assert proc.returncode == 0, tail(output(proc))
    scheduled = set(job_counts(output(proc)))
    assert scheduled == {"train_affinity"} | descendants(tiny_graph, "train_affinity")
    assert not {"finetune_classifier", "extract_cams", "crf_seeds", "gather_seeds"} & scheduled


@pytest.mark.slow
def test_until_stops_at_the_named_rule(tiny_run: WorkflowRun, tiny_graph):
    """``--until eval_cams`` on a fresh run schedules eval_cams and what it needs, nothing
    downstream (no seeds, AffinityNet, segmenter or summary)."""
    proc = snakemake(
        tiny_run.workdir, "-n", "--configfile", tiny_run.configfile,
        "--config", "run=tiny_until", "--until", "eval_cams",
    )  # fmt: skip
    assert proc.returncode == 0, tail(output(proc))
    counts = job_counts(output(proc))
    assert set(counts) == {"eval_cams"} | ancestors(tiny_graph, "eval_cams")
    assert not set(counts) & (
        {"crf_seeds", "train_segmenter"} | descendants(tiny_graph, "eval_cams")
    )
    methods = len(tiny_run.config["cams"]["methods"])
    assert counts["eval_cams"] == counts["gather_cams"] == methods
    assert not (tiny_run.workdir / "results" / "tiny_until").exists()  # a dry run writes nothing
