"""The DAG (dry runs): config.yaml, tests/configs/tiny.yaml and the VOC and COCO presets resolve to
the jobs
the design asks for, the rule graph is the designed pipeline, and ``snakemake --lint`` finds
nothing."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from workflow_utils import (
    COCO_PRESET,
    TINY_CONFIG,
    VOC_PRESET,
    expected_job_counts,
    job_counts,
    local_rules,
    output,
    rule_graph,
    run_config,
    snakemake,
    tail,
)

# The rule graph of the design (rule -> rules that read its outputs): data -> classifier ->
# cams (relevance maps) -> seeds -> affinity (AffinityNet) -> walk (random walk) -> segmenter,
# every stage scored, the scores summarised, figures drawn last.
EXPECTED_RULE_GRAPH = {
    "make_synthetic": {
        "make_labels", "finetune_classifier", "extract_cams", "eval_cams", "crf_seeds",
        "eval_seeds", "train_affinity", "random_walk", "eval_walk", "train_segmenter",
        "predict_segmenter", "eval_segmenter", "figure_samples", "figure_methods", "walk_ceiling",
    },
    "make_labels": {"finetune_classifier", "extract_cams"},
    # the AffinityNet and the segmenter sit on the classifier's features
    "finetune_classifier": {"extract_cams", "train_affinity", "train_segmenter", "figure_curves",
                            "report_tables", "all"},
    "extract_cams": {"gather_cams"},
    "gather_cams": {"eval_cams", "crf_seeds", "random_walk", "figure_samples", "figure_methods",
                    "walk_ceiling"},
    "eval_cams": {"compare_cams", "summary"},
    "compare_cams": {"report_tables", "all"},
    "crf_seeds": {"gather_seeds"},
    "gather_seeds": {"train_affinity", "eval_seeds", "figure_samples"},
    "eval_seeds": {"summary"},
    "train_affinity": {"random_walk", "figure_curves", "walk_ceiling"},
    "random_walk": {"gather_walk"},
    "gather_walk": {"eval_walk", "train_segmenter", "figure_samples"},
    "eval_walk": {"summary"},
    "train_segmenter": {"predict_segmenter", "figure_curves", "figure_samples"},
    "predict_segmenter": {"eval_segmenter", "figure_samples"},
    "eval_segmenter": {"summary"},
    "summary": {"report_tables", "all"},
    "report_tables": {"figure_runtimes", "all"},
    "figure_samples": {"figure_runtimes", "all"},
    "figure_methods": {"figure_runtimes", "all"},
    "figure_curves": {"figure_runtimes", "all"},
    "figure_runtimes": {"all"},
    "walk_ceiling": {"report_tables", "all"},
    "all": set(),
}  # fmt: skip

# Rules that Snakemake runs itself under a cluster profile (no sbatch): the downloads need the

# login node's network, the others take seconds, less than a job's scheduling.
LOCAL_RULES = {
    "download_voc", "download_sbd", "download_voc_test", "download_coco", "make_synthetic",
    "make_labels", "gather_cams", "compare_cams", "gather_seeds", "eval_seeds", "gather_walk",
    "eval_walk", "eval_segmenter", "summary", "report_tables", "figure_methods", "figure_curves",
    "figure_runtimes",
}  # fmt: skip


# ============================================================ the DAG (dry runs)


@pytest.mark.parametrize(
    "configfile",
    [None, TINY_CONFIG, VOC_PRESET, COCO_PRESET],
    ids=["config.yaml", "tiny", "voc2012", "coco2014"],
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
    elif config["data"]["source"] == "coco2014":
        assert counts["convert_coco"] == config["data"]["coco2014"]["shards"]
        assert not {"make_synthetic", "download_voc", "prepare_voc"} & set(counts)
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
    # its parent; the run for real is tests/workflow/test_voc_preset.py
    assert f"output: {voc['root']}\n" in text
    assert f"--out {Path(voc['root']).parent} --no-progress" in text


def test_coco_preset_downloads_three_zips_and_converts_in_shards(dry_workdir):
    """The COCO preset fetches the three archives with their checksums, extracts each in its
    own job, converts in data.coco2014.shards jobs and gathers them into the tree at
    data.coco2014.root; the run for real is tests/workflow/test_coco_preset.py."""
    config = run_config(dry_workdir, COCO_PRESET)
    coco = config["data"]["coco2014"]
    assert config["data"]["source"] == "coco2014" and coco["shards"] == 32
    proc = snakemake(dry_workdir, "-n", "-p", "--configfile", COCO_PRESET, timeout=120)
    text = output(proc)
    assert proc.returncode == 0, tail(text)
    for key, archive in (
        ("train", "train2014"),
        ("val", "val2014"),
        ("annotations", "annotations_trainval2014"),
    ):
        url, md5 = coco[f"{key}_url"], coco[f"{key}_md5"]
        assert (
            f"--url {shlex.quote(url)} --md5 {md5} --out {coco['downloads']}/{archive}.zip" in text
        )
    assert f"output: {coco['root']}\n" in text
    assert "--shard 31 --num-shards 32" in text


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


@pytest.mark.parametrize(
    "configfile", [TINY_CONFIG, VOC_PRESET, COCO_PRESET], ids=["tiny", "voc2012", "coco2014"]
)
def test_lint_finds_nothing(configfile, dry_workdir):
    """``snakemake --lint``: no finding (every setting reaches a rule as input or params, one
    conda environment per rule, functions only in rules/common.smk, no path composed with +)."""
    proc = snakemake(dry_workdir, "--lint", "--configfile", configfile, timeout=120)
    text = output(proc)
    assert proc.returncode == 0, tail(text)
    assert "Congratulations, your workflow is in a good condition!" in text, tail(text)
    assert "Lints for" not in text, tail(text)


def test_cheap_rules_are_local_rules():
    """Under a cluster profile, the downloads and the rules that take seconds run in
    Snakemake's own process (their ``localrules:`` blocks); tests/workflow/test_slurm.py checks that
    they really go without sbatch and everything else with it."""
    assert local_rules() == LOCAL_RULES
