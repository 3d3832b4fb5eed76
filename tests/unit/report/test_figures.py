"""Report figures: sample grid, training curves, runtime chart (PNG sizes and values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from workflow_utils import load_script

from wsss_core.cams.store import CamRecord, write_store
from wsss_core.data.layout import (
    load_gt_mask,
    load_image,
    read_class_names,
    read_split,
    sample_ids,
)
from wsss_core.data.palette import save_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.report.figures import (
    FONT_PT,
    Panel,
    heat_overlay,
    legend_entries,
    mask_overlay,
    mask_rgb,
    methods_figure,
    panel_grid,
    relevance_panels,
    runtime_chart,
    runtime_table,
    sample_rows,
    samples_figure,
    save_figure,
    segmenter_masks,
    shown_class,
    training_curves,
    val_samples_figure,
)
from wsss_core.segmenter.model import build_segmenter, load_segmenter, save_segmenter
from wsss_core.segmenter.predict import predict


def _pixels(inches: float, dpi: int) -> int:
    """The pixels matplotlib's Agg canvas gives ``inches`` at ``dpi`` (rounded down)."""
    return int(inches * dpi + 1e-6)


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_mask_colours_and_ignored_white():
    mask = np.array([[0, 1], [255, 2]], dtype=np.uint8)
    rgb = mask_rgb(mask)
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[0, 1].tolist() == [128, 0, 0]  # VOC colour of label 1
    assert rgb[1, 1].tolist() == [0, 128, 0]
    assert rgb[1, 0].tolist() == [255, 255, 255]


def test_heat_overlay_blends_jet_colours():
    image = np.full((1, 2, 3), 100, dtype=np.uint8)
    heat = np.array([[0.0, 1.0]])
    out = heat_overlay(image, heat, weight=0.5)
    # jet(0) = (0, 0, 0.5), jet(1) = (0.5, 0, 0)
    assert out[0, 0].tolist() == [50, 50, 114]
    assert out[0, 1].tolist() == [114, 50, 50]
    with pytest.raises(ValueError, match="differ"):
        heat_overlay(image, np.zeros((2, 2)))


def test_mask_overlay_colours_the_classes_only():
    image = np.full((1, 3, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1, 255]], dtype=np.uint8)
    out = mask_overlay(image, mask, weight=0.5)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [100, 100, 100]  # background: the image
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + VOC colour (128, 0, 0)) / 2
    assert out[0, 2].tolist() == [100, 100, 100]  # ignored: the image
    with pytest.raises(ValueError, match="differ"):
        mask_overlay(image, np.zeros((2, 2), np.uint8))


def test_legend_names_every_palette_colour():
    entries = legend_entries(["disc", "square"])
    assert [name for name, _ in entries] == ["background", "disc", "square", "unsure / ignored"]
    assert [colour for _, colour in entries] == [
        (0.0, 0.0, 0.0),
        (128 / 255, 0.0, 0.0),  # VOC colour of label 1
        (0.0, 128 / 255, 0.0),
        (1.0, 1.0, 1.0),
    ]


def test_relevance_panels_one_per_class_titled_with_its_name():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    maps = np.zeros((2, 2, 2), dtype=np.float32)
    maps[1] = 1.0
    panels = relevance_panels(image, maps, [2, 0], ["disc", "square", "triangle"])
    assert [p.title for p in panels] == ["relevance: triangle", "relevance: disc"]
    np.testing.assert_array_equal(panels[0].image, heat_overlay(image, maps[0]))
    np.testing.assert_array_equal(panels[1].image, heat_overlay(image, maps[1]))
    with pytest.raises(ValueError, match="2 maps for 1 classes"):
        relevance_panels(image, maps, [0], ["disc"])


def test_shown_class_is_the_largest_in_the_ground_truth():
    truth = np.array([[1, 3, 3], [3, 0, 255]], dtype=np.uint8)
    assert shown_class([0, 2], truth) == 2  # label 3: three pixels, label 1: one
    assert shown_class([1, 0], truth) == 0  # label 2 absent
    assert shown_class([1], truth) == 1  # none in the mask: the first
    with pytest.raises(ValueError, match="no class"):
        shown_class([], truth)


def test_sample_ids_are_spread_and_fixed():
    ids = [f"i{k}" for k in range(10)]
    assert sample_ids(ids, 4) == ["i0", "i3", "i6", "i9"]
    assert sample_ids(ids, 20) == ids
    assert sample_ids(ids, 0) == []


def test_panel_grid_layout_titles_and_labels(tmp_path):
    panel = Panel(np.zeros((8, 8, 3), dtype=np.uint8))
    rows = [[panel, Panel(panel.image, "own"), None], [panel, Panel(panel.image, "own 2"), panel]]
    fig = panel_grid(rows, ["a", "b"], ["first", None, "third"], legend_entries(["x"]), True)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 5  # the empty slot draws nothing
    titles = [ax.get_title() for ax in images]
    assert titles == ["first", "own", "", "own 2", ""]
    labels = [ax.get_ylabel() for ax in images if ax.get_ylabel()]
    assert labels == ["a", "b"]
    assert all(t.get_fontsize() >= 9 for ax in images for t in (ax.title, ax.yaxis.label))
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["background", "x", "unsure / ignored"]
    assert all(t.get_fontsize() == FONT_PT for t in legend.get_texts())
    path = tmp_path / "grid.png"
    save_figure(fig, path, dpi=50)
    width = 0.35 + 3 * 1.6 + 2 * 0.06 + 0.1
    height = 2 * (1.6 + 0.3) + 0.15 + 0.22 + 0.55 + 0.05
    assert _png_size(path) == (_pixels(width, 50), _pixels(height, 50))
    with pytest.raises(ValueError, match="row 1 has 1 panels for 3 columns"):
        panel_grid([rows[0], [panel]], ["a", "b"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="1 row labels for 2 rows"):
        panel_grid(rows, ["a"], ["x", "y", "z"])
    assert panel_grid([], [], ["x"]).texts[0].get_text().startswith("no images")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny dataset, a cam store per method for the train images, seeds and walk masks for
    train, predictions (without and with CRF) for val."""
    base = tmp_path_factory.mktemp("fig")
    root = base / "data"
    generate_dataset(root, num_classes=3, image_size=32, num_train=3, num_val=2, seed=2)
    train, val = read_split(root, "train"), read_split(root, "val")
    for method, column in (("transformer_attribution", 2), ("rollout", 0)):
        records = []
        for image_id in train:
            truth = load_gt_mask(root, image_id)
            classes = sorted(int(c) - 1 for c in np.unique(truth) if c not in (0, 255))
            maps = np.zeros((len(classes), 4, 4), dtype=np.float32)
            maps[:, 1, column] = 1.0
            records.append(CamRecord(image_id, maps, classes, (32, 32)))
        write_store(base / f"{method}.h5", records, method)
    for folder, ids in (("seeds", train), ("rw", train), ("pred", val), ("crf", val)):
        for image_id in ids:
            save_mask(base / folder / f"{image_id}.png", np.ones((32, 32), dtype=np.uint8))
    return base, root, train, val


def test_sample_rows_hold_every_stage_of_each_image(run):
    base, root, train, _ = run
    predictions = {i: np.full((32, 32), 2, dtype=np.uint8) for i in train}
    store = base / "transformer_attribution.h5"
    rows = sample_rows(root, train[:2], store, base / "seeds", base / "rw", predictions)
    names = read_class_names(root)
    assert [r.image_id for r in rows] == train[:2]
    for row in rows:
        np.testing.assert_array_equal(row.image, load_image(root, row.image_id))
        truth = load_gt_mask(root, row.image_id)
        present = [names[int(c) - 1] for c in np.unique(truth) if c not in (0, 255)]
        assert [p.title for p in row.relevance] == [f"relevance: {n}" for n in present]
        assert row.seeds[0, 0].tolist() == [128, 0, 0]  # label 1
        assert row.prediction[0, 0].tolist() == [0, 128, 0]  # label 2
        # the heat overlay peaks where the map does (upsampled 4x4 -> 32x32: column 2)
        heat = row.relevance[0].image.astype(int)
        red_minus_blue = heat[..., 0] - heat[..., 2]
        assert np.unravel_index(red_minus_blue.argmax(), red_minus_blue.shape)[1] // 8 == 2
    with pytest.raises(FileNotFoundError, match="seed mask .* re-run rule gather_seeds"):
        sample_rows(root, train[:1], store, base / "nothing", base / "rw", predictions)
    with pytest.raises(KeyError, match="no segmenter prediction"):
        sample_rows(root, train[:1], store, base / "seeds", base / "rw", {})
    with pytest.raises(KeyError, match="not in cam store"):
        sample_rows(root, [run[3][0]], store, base / "seeds", base / "rw", predictions)


def test_samples_figure_columns_and_legend(run, tmp_path):
    base, root, train, _ = run
    predictions = {i: np.zeros((32, 32), dtype=np.uint8) for i in train}
    store = base / "transformer_attribution.h5"
    rows = sample_rows(root, train, store, base / "seeds", base / "rw", predictions)
    fig = samples_figure(rows, read_class_names(root))
    slots = max(len(r.relevance) for r in rows)
    top = [ax.get_title() for ax in fig.axes if ax.images][: 5 + slots]
    assert top[:2] == ["image", "ground truth"] and top[-3:] == [
        "seeds",
        "random walk",
        "segmenter",
    ]
    assert all(t.startswith("relevance: ") for t in top[2:-3])
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == sum(5 + len(r.relevance) for r in rows)  # no "n/a" panel
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["background", *read_class_names(root), "unsure / ignored"]
    save_figure(fig, tmp_path / "samples.png", dpi=30)
    assert _png_size(tmp_path / "samples.png")[0] == _pixels(0.45 + (5 + slots) * 1.66 - 0.06, 30)


def test_val_and_methods_figures(run):
    base, root, train, val = run
    fig = val_samples_figure(root, val, base / "pred", base / "crf")
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 4 * len(val)
    assert [ax.get_title() for ax in drawn[:4]] == [
        "image", "ground truth", "segmenter", "segmenter + CRF"
    ]  # fmt: skip
    stores = {m: base / f"{m}.h5" for m in ("transformer_attribution", "rollout")}
    fig = methods_figure(root, train, stores)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 4 * len(train)
    assert [ax.get_title() for ax in drawn[:4]] == [
        "image", "ground truth", "transformer_attribution", "rollout"
    ]  # fmt: skip
    names = read_class_names(root)
    labels = [ax.get_ylabel() for ax in drawn if ax.get_ylabel()]
    assert [label.split(": ")[0] for label in labels] == train
    assert all(label.split(": ")[1] in names for label in labels)
    # each method's column shows its own map: the heat peaks at column 2 and at column 0
    for panel, column in ((drawn[2], 2), (drawn[3], 0)):
        heat = panel.images[0].get_array().astype(int)
        red_minus_blue = heat[..., 0] - heat[..., 2]
        assert np.unravel_index(red_minus_blue.argmax(), red_minus_blue.shape)[1] // 8 == column
    with pytest.raises(FileNotFoundError, match="prediction .* predict_segmenter"):
        val_samples_figure(root, val, base / "nothing", base / "crf")


def test_training_curves_plot_losses_and_every_validation_metric(tmp_path):
    epochs = [1, 2, 3]
    paths = {}
    for name, extra in (
        ("classifier", {"val_loss": [1, 0.8, 0.7], "val_mAP": [0.4, 0.5, 0.6],
                        "val_F1": [0, 0.1, 0.2]}),
        ("affinity", {"train_neg_loss": [0.3, 0.2, 0.1], "val_loss": [2, 1, 1],
                      "val_neg_acc": [0.5, 0.6, 0.7]}),
        ("segmenter", {}),
    ):  # fmt: skip
        frame = pd.DataFrame(
            {"epoch": epochs, "train_loss": [1.0, 0.5, 0.3], "lr": [1, 0.5, 0], **extra}
        )
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    fig = training_curves(paths, panel_inches=2.0)
    assert len(fig.axes) == 6  # losses on top, validation metrics below, one column each
    lines = {ax.get_title() or f"below {i}": [ln.get_label() for ln in ax.get_lines()]
             for i, ax in enumerate(fig.axes)}  # fmt: skip
    assert lines["classifier"] == ["train_loss", "val_loss"]
    assert lines["affinity"] == ["train_loss", "val_loss"]
    assert lines["segmenter"] == ["train_loss"]
    below = [[ln.get_label() for ln in ax.get_lines()] for ax in fig.axes[3:]]
    assert below == [["val_mAP", "val_F1"], ["val_neg_acc"], []]
    np.testing.assert_array_equal(fig.axes[3].get_lines()[0].get_ydata(), [0.4, 0.5, 0.6])
    assert fig.axes[5].texts[0].get_text() == "no validation metric"
    save_figure(fig, tmp_path / "curves.png", dpi=50)
    assert _png_size(tmp_path / "curves.png") == (round(3 * 2.0 * 1.25 * 50), round(4.4 * 50))
    pd.DataFrame({"epoch": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="bad.csv"):
        training_curves({"x": tmp_path / "bad.csv"})


def _bench(path: Path, seconds: list[float], rss: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["s\th:m:s\tmax_rss\tmax_vms"]
    lines += [f"{s}\t0:00:01\t{r}\t10" for s, r in zip(seconds, rss, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def benchmarks(tmp_path):
    b = tmp_path / "results" / "demo" / "benchmarks"
    return [
        _bench(b / "extract_cams" / "ta" / "1-of-2.tsv", [10.0], ["100.5"]),
        _bench(b / "extract_cams" / "ta" / "2-of-2.tsv", [12.0], ["120.0"]),
        _bench(b / "extract_cams" / "rollout" / "1-of-2.tsv", [3.0], ["-"]),
        _bench(b / "train_segmenter" / "ta.tsv", [40.0, 60.0], ["500", "700"]),  # two repeats
        _bench(b / "summary" / "all.tsv", [0.5], ["50"]),
        _bench(b / "gather_seeds" / "ta.tsv", [0.1], ["0"]),  # exited before the first sample
    ]


def test_runtime_table_sums_per_rule(benchmarks):
    table = runtime_table(benchmarks)
    assert table["rule"].tolist() == ["train_segmenter", "extract_cams", "summary", "gather_seeds"]
    assert table["seconds"].tolist() == [50.0, 25.0, 0.5, 0.1]
    assert table["jobs"].tolist() == [1, 3, 1, 1]
    assert table["max_rss_mb"].tolist()[:3] == [600.0, 120.0, 50.0]
    assert np.isnan(table["max_rss_mb"].iloc[3])  # 0 MB: not measured


def test_runtime_chart_and_cli(benchmarks, tmp_path):
    fig, table = runtime_chart(benchmarks)
    assert len(table) == 4
    out = tmp_path / "out"
    argv = ["runtimes", "--benchmark-dir", str(benchmarks[0].parents[2]), "--dpi", "50"]
    argv += ["--out-png", str(out / "runtimes.png"), "--out-csv", str(out / "runtimes.csv")]
    argv += ["--out-html", str(out / "runtimes.html")]
    assert load_script("report_figures").main(argv) == 0
    written = pd.read_csv(out / "runtimes.csv")
    assert written.set_index("rule")["seconds"].to_dict() == {
        "train_segmenter": 50.0,
        "extract_cams": 25.0,
        "summary": 0.5,
        "gather_seeds": 0.1,
    }
    assert _png_size(out / "runtimes.png")[0] == 350
    page = (out / "runtimes.html").read_text(encoding="utf-8")
    assert "<h1>Runtime per rule</h1>" in page
    assert '<td>extract_cams</td><td class="num" data-v="3.0">3</td>' in page
    assert '<td class="num" data-v="25.0">25.00</td>' in page
    bad = _bench(tmp_path / "b" / "x" / "y.tsv", [1.0], ["1"])
    bad.write_text("seconds\n1\n")
    with pytest.raises(ValueError, match="y.tsv"):
        runtime_table([bad])


@pytest.fixture(scope="module")
def segmenter_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_segmenter({"backbone": "resnet10t", "aspp_channels": 8, "low_level_channels": 4,
                             "decoder_channels": 8, "num_classes": 4})  # fmt: skip
    path = tmp_path_factory.mktemp("seg") / "segmenter.pt"
    info = {"class_names": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.25] * 3}
    save_segmenter(path, model, info)
    return path


def test_segmenter_masks_are_the_argmax_of_predict(run, segmenter_file):
    _, root, train, _ = run
    masks = segmenter_masks(segmenter_file, root, train[:2], scales=[1.0, 0.5], flip=True)
    model, info = load_segmenter(segmenter_file)
    for image_id in train[:2]:
        probs = predict(model, load_image(root, image_id), info["mean"], info["std"],
                        [1.0, 0.5], True)  # fmt: skip
        np.testing.assert_array_equal(masks[image_id], probs.argmax(axis=0))


def test_cli_samples_methods_and_curves(run, segmenter_file, tmp_path, capsys):
    base, root, train, val = run
    script = load_script("report_figures")
    argv = ["samples", "--data-root", str(root), "--train-split", "train", "--val-split", "val"]
    argv += ["--config-json", '{"num_train_samples": 2, "num_val_samples": 1}']
    argv += ["--store", str(base / "transformer_attribution.h5")]
    argv += ["--seeds-dir", str(base / "seeds"), "--rw-dir", str(base / "rw")]
    argv += [
        "--segmenter",
        str(segmenter_file),
        "--inference-json",
        '{"scales": [1], "flip": false}',
    ]
    argv += ["--device", "cpu", "--threads", "1"]
    argv += ["--pred-dir", str(base / "pred"), "--crf-dir", str(base / "crf"), "--dpi", "30"]
    argv += ["--out", str(tmp_path / "samples.png"), "--out-val", str(tmp_path / "val.png")]
    assert script.main(argv) == 0
    assert _png_size(tmp_path / "samples.png")[1] > _png_size(tmp_path / "val.png")[1]
    argv = ["methods", "--data-root", str(root), "--train-split", "train"]
    argv += ["--config-json", '{"num_train_samples": 2}', "--dpi", "30"]
    argv += ["--store", f"transformer_attribution={base / 'transformer_attribution.h5'}"]
    argv += [f"rollout={base / 'rollout.h5'}", "--out", str(tmp_path / "methods.png")]
    assert script.main(argv) == 0
    assert _png_size(tmp_path / "methods.png")[0] == _pixels(0.45 + 4 * 1.66 - 0.06, 30)
    history = tmp_path / "h.csv"
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "lr": [0.1, 0.0]}).to_csv(history)
    argv = ["curves", "--history", f"segmenter={history}", "--out", str(tmp_path / "c.png")]
    assert script.main(argv) == 0
    assert (tmp_path / "c.png").is_file()
    assert script.main(["curves", "--history", str(history), "--out", str(tmp_path / "d.png")]) == 2
    assert "report_figures: error: --history takes NAME=PATH items" in capsys.readouterr().err
