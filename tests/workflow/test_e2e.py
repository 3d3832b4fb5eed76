"""The tiny end-to-end run (``tiny_run`` in conftest.py: 24 train and 8 val synthetic 64-px
images, one epoch per network, about a minute on 2 cores), checked by value: every stage's
outputs, the summary, the report and reproducibility. The tests are marked ``slow``."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from html import escape

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from workflow_utils import (
    WorkflowRun,
    expected_job_counts,
    output,
    read_ids,
    read_mask,
    snakemake,
    tail,
    tensors_equal,
)

from wsss_core.data.layout import read_split
from wsss_core.evaluate.sweep import best_threshold, split_holdout, sweep_thresholds
from wsss_core.report.tables import format_value

IGNORE = 255


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
def test_the_run_ends_with_its_summary_on_screen(tiny_run: WorkflowRun):
    """Snakemake's onsuccess prints the wall time, the summary table, the logs and the report."""
    end = tiny_run.log[tiny_run.log.index("wsss: run 'tiny' finished in ") :]
    summary = (tiny_run.results / "tables" / "summary.md").read_text().rstrip()
    assert summary in end
    assert f"logs: results/{tiny_run.config['run']}/logs/<rule>/" in end
    assert "report: snakemake --report results/tiny/report.html" in end


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
        "figures/samples_val.png",
        "figures/methods.png",
        "figures/training_curves.png",
        "figures/runtimes.png",
        *(f"tables/{name}.html" for name in ("summary", "summary_per_class", "cams_comparison",
                                             "classifier_val_metrics", "runtimes")),
        *(f"tables/walk_ceiling_{m}.html" for m in cfg["seeds"]["methods"]),
    ]  # fmt: skip
    missing = [f for f in expected if not (res / f).is_file() or (res / f).stat().st_size == 0]
    assert missing == []
    logs = list((res / "logs").rglob("*.log"))
    assert len(logs) == sum(expected_job_counts(tiny_run.config).values()) - 1  # `all` has none
    # the runtime table: one row per rule, counting all its jobs; every rule is benchmarked
    # but figure_runtimes itself (it reads the benchmarks) and all (no job)
    runtimes = pd.read_csv(res / "tables/runtimes.csv").set_index("rule")
    benchmarked = {d.name for d in (res / "benchmarks").iterdir()}
    counts = expected_job_counts(tiny_run.config)
    assert benchmarked == set(counts) - {"figure_runtimes", "all"}
    assert set(runtimes.index) == benchmarked
    assert runtimes["jobs"].to_dict() == {rule: counts[rule] for rule in benchmarked}
    assert (runtimes["seconds"] > 0).all()
    # memory is sampled while a job runs: short jobs may end before the first sample (NaN)
    assert ((runtimes["max_rss_mb"] > 0) | runtimes["max_rss_mb"].isna()).all()
    assert runtimes.loc[["finetune_classifier", "train_segmenter"], "max_rss_mb"].gt(0).all()


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
        for column in ("holdout_threshold", "holdout_mIoU"):
            assert row[column] == comparison.loc[method, column]
    # the held-out choice, recomputed from the store: chosen on every n-th image, scored on the rest
    method = cams["methods"][0]
    root = tiny_run.results / "data" / "synthetic"
    ids = read_split(root, tiny_run.config["data"]["train_split"])
    num_classes = tiny_run.config["data"]["synthetic"]["num_classes"] + 1
    held, scored = (
        sweep_thresholds(tiny_run.results / "cams" / f"{method}.h5", root, part, num_classes,
                         cams["eval"]["values"])
        for part in split_holdout(ids, cams["eval"]["holdout_every"])
    )  # fmt: skip
    chosen = best_threshold(held)[0]
    row = summary.loc[("relevance map", method)]
    assert row["holdout_threshold"] == pytest.approx(chosen)
    assert row["holdout_mIoU"] == pytest.approx(100 * scored[chosen].scores().miou)


REPORTED = {
    # file under results/<run>/ -> (mime type in the report, its category)
    "tables/summary.html": ("text/html", "0. Summary"),
    "tables/summary_per_class.html": ("text/html", "0. Summary"),
    "tables/classifier_val_metrics.html": ("text/html", "1. Classifier"),
    "tables/cams_comparison.html": ("text/html", "2. Relevance maps"),
    "figures/methods.png": ("image/png", "2. Relevance maps"),
    "tables/walk_ceiling_{method}.html": ("text/html", "3. Random walk"),
    "figures/samples.png": ("image/png", "4. Figures"),
    "figures/samples_val.png": ("image/png", "4. Figures"),
    "figures/training_curves.png": ("image/png", "4. Figures"),
    "figures/runtimes.png": ("image/png", "5. Runtimes"),
    "tables/runtimes.html": ("text/html", "5. Runtimes"),
}
# the CSV tables behind the HTML ones (the HTML shows each cell of its CSV)
HTML_SOURCES = {
    "tables/summary.html": "tables/summary.csv",
    "tables/summary_per_class.html": "tables/summary_per_class.csv",
    "tables/classifier_val_metrics.html": "classifier/val_metrics.csv",
    "tables/cams_comparison.html": "tables/cams_comparison.csv",
    "tables/walk_ceiling_{method}.html": "tables/walk_ceiling_{method}.csv",
    "tables/runtimes.html": "tables/runtimes.csv",
}


def categories_of(html: str) -> dict[str, dict[str, list[str]]]:
    """The report's categories: {category: {subcategory: [result paths]}}."""
    start = html.index("categories = ") + len("categories = ")
    return json.JSONDecoder().raw_decode(html, start)[0]


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
    method = tiny_run.config["seeds"]["methods"][0]
    reported = {rel.format(method=method): kind for rel, kind in REPORTED.items()}
    # every table is there as HTML (shown in the page), none as a CSV (a download link only)
    assert set(entries) == set(reported)
    categories = categories_of(html)
    assert sorted(categories)[0] == "0. Summary"  # the report lists the summary first
    for rel, (mime, category) in reported.items():
        uri = entries[rel]["data_uri"]
        assert uri.startswith(f"data:{mime};"), rel
        embedded = base64.b64decode(uri.split("base64,", 1)[1])
        assert embedded == (tiny_run.results / rel).read_bytes(), rel
        assert f"results/{tiny_run.config['run']}/{rel}" in categories[category]["Other"], rel
    # each HTML table shows every cell of its CSV, formatted as in the Markdown tables
    for rel, source in HTML_SOURCES.items():
        page = (tiny_run.results / rel.format(method=method)).read_text(encoding="utf-8")
        table = pd.read_csv(tiny_run.results / source.format(method=method))
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
        assert len(cells) == table.size, rel
        headings = re.findall(r"<th[^>]*>([^<]*)</th>", page)
        assert headings == [escape(str(c)) for c in table.columns], rel
        first = table.iloc[0]
        assert cells[: len(first)] == [escape(format_value(v)) for v in first], rel
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
            "--split", cfg["data"]["train_split"], "--val-split", cfg["data"]["eval_split"],
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
