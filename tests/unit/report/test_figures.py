"""Report figures: sample grid, training curves, runtime chart (PNG sizes and values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow_utils import load_script

from wsss_core.cams.store import CamRecord, write_store
from wsss_core.data.layout import load_image, read_split
from wsss_core.data.palette import save_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.report.figures import (
    SAMPLE_COLUMNS,
    figure_grid,
    heat_overlay,
    mask_overlay,
    mask_rgb,
    relevance_heat,
    runtime_chart,
    runtime_table,
    sample_ids,
    sample_rows,
    samples_figure,
    save_figure,
    training_curves,
)


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


def test_relevance_heat_is_the_max_over_classes():
    maps = np.array([[[0.1, 0.9]], [[0.5, 0.2]]], dtype=np.float32)
    np.testing.assert_allclose(relevance_heat(maps, (1, 2)), [[0.5, 0.9]])
    assert relevance_heat(np.zeros((0, 3, 4), np.float32), (3, 4)).shape == (3, 4)


def test_sample_ids_are_spread_and_fixed():
    ids = [f"i{k}" for k in range(10)]
    assert sample_ids(ids, 4) == ["i0", "i3", "i6", "i9"]
    assert sample_ids(ids, 20) == ids
    assert sample_ids(ids, 0) == []


def test_figure_grid_png_size(tmp_path):
    panel = np.zeros((8, 8, 3), dtype=np.uint8)
    rows = [dict.fromkeys(SAMPLE_COLUMNS, panel) for _ in range(2)]
    rows[1]["segmenter"] = None
    path = tmp_path / "grid.png"
    save_figure(figure_grid(rows, ["a", "b"]), path, dpi=50)
    assert _png_size(path) == (round(6 * 1.6 * 50), round(2 * 1.6 * 50))
    with pytest.raises(ValueError, match="row 1"):
        figure_grid([{"a": panel}, {"b": panel}])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny dataset, a cam store for two train images, seeds/rw for train, predictions for val."""
    base = tmp_path_factory.mktemp("fig")
    root = base / "data"
    generate_dataset(root, num_classes=2, image_size=32, num_train=3, num_val=2, seed=2)
    train, val = read_split(root, "train"), read_split(root, "val")
    records = []
    for image_id in train[:2]:
        maps = np.zeros((1, 4, 4), dtype=np.float32)
        maps[0, 1, 2] = 1.0
        records.append(CamRecord(image_id, maps, [0], (32, 32)))
    write_store(base / "cams.h5", records, "transformer_attribution")
    for folder, ids in (("seeds", train), ("rw", train), ("pred", val)):
        for image_id in ids:
            save_mask(base / folder / f"{image_id}.png", np.ones((32, 32), dtype=np.uint8))
    return base, root, train, val


def test_sample_rows_mark_missing_sources(run):
    base, root, train, val = run
    rows = sample_rows(
        root,
        [train[0], train[2], val[0]],
        base / "cams.h5",
        base / "seeds",
        base / "rw",
        base / "pred",
    )
    assert list(rows[0]) == list(SAMPLE_COLUMNS)
    np.testing.assert_array_equal(rows[0]["image"], load_image(root, train[0]))
    assert rows[0]["relevance map"] is not None and rows[0]["segmenter"] is None
    assert rows[1]["relevance map"] is None  # not in the store
    assert rows[2]["seeds"] is None and rows[2]["random walk"] is None
    assert rows[2]["segmenter"][0, 0].tolist() == [128, 0, 0]
    # the heat overlay peaks where the map does (upsampled 4x4 -> 32x32)
    heat = rows[0]["relevance map"].astype(int)
    red_minus_blue = heat[..., 0] - heat[..., 2]
    assert np.unravel_index(red_minus_blue.argmax(), red_minus_blue.shape)[1] // 8 == 2


def test_samples_figure_size(run, tmp_path):
    base, root, train, val = run
    fig = samples_figure(root, train[:2], val[:1], base / "cams.h5", pred_dir=base / "pred")
    save_figure(fig, tmp_path / "samples.png", dpi=40)
    assert _png_size(tmp_path / "samples.png") == (round(6 * 1.6 * 40), round(3 * 1.6 * 40))


def test_training_curves_png(tmp_path):
    epochs = [1, 2, 3]
    paths = {}
    for name, extra in (
        ("classifier", {"val_loss": [1, 0.8, 0.7], "val_mAP": [40, 50, 60]}),
        ("segmenter", {}),
    ):
        frame = pd.DataFrame(
            {"epoch": epochs, "train_loss": [1.0, 0.5, 0.3], "lr": [1, 0.5, 0], **extra}
        )
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    fig = training_curves(paths, panel_inches=2.0)
    assert len(fig.axes) == 3  # two panels and one metric axis
    save_figure(fig, tmp_path / "curves.png", dpi=50)
    assert _png_size(tmp_path / "curves.png") == (round(2 * 2.0 * 1.3 * 50), round(2.0 * 50))
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
    ]


def test_runtime_table_sums_per_rule(benchmarks):
    table = runtime_table(benchmarks)
    assert table["rule"].tolist() == ["train_segmenter", "extract_cams", "summary"]
    assert table["seconds"].tolist() == [50.0, 25.0, 0.5]
    assert table["jobs"].tolist() == [1, 3, 1]
    assert table["max_rss_mb"].tolist() == [600.0, 120.0, 50.0]


def test_runtime_chart_and_cli(benchmarks, tmp_path):
    fig, table = runtime_chart(benchmarks)
    assert len(table) == 3
    out = tmp_path / "out"
    argv = ["runtimes", "--benchmark-dir", str(benchmarks[0].parents[2]), "--dpi", "50"]
    argv += ["--out-png", str(out / "runtimes.png"), "--out-csv", str(out / "runtimes.csv")]
    assert load_script("report_figures").main(argv) == 0
    written = pd.read_csv(out / "runtimes.csv")
    assert written.set_index("rule")["seconds"].to_dict() == {
        "train_segmenter": 50.0,
        "extract_cams": 25.0,
        "summary": 0.5,
    }
    assert _png_size(out / "runtimes.png")[0] == 300
    bad = _bench(tmp_path / "b" / "x" / "y.tsv", [1.0], ["1"])
    bad.write_text("seconds\n1\n")
    with pytest.raises(ValueError, match="y.tsv"):
        runtime_table([bad])


def test_cli_samples_and_curves(run, tmp_path, capsys):
    base, root, train, val = run
    script = load_script("report_figures")
    argv = ["samples", "--data-root", str(root), "--train-split", "train", "--val-split", "val"]
    argv += ["--config-json", '{"num_train_samples": 2, "num_val_samples": 1}']
    argv += ["--store", str(base / "cams.h5"), "--seeds-dir", str(base / "seeds")]
    argv += ["--rw-dir", str(base / "rw"), "--pred-dir", str(base / "pred"), "--dpi", "30"]
    assert script.main([*argv, "--out", str(tmp_path / "samples.png")]) == 0
    assert _png_size(tmp_path / "samples.png") == (round(6 * 1.6 * 30), round(3 * 1.6 * 30))
    history = tmp_path / "h.csv"
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "lr": [0.1, 0.0]}).to_csv(history)
    argv = ["curves", "--history", f"segmenter={history}", "--out", str(tmp_path / "c.png")]
    assert script.main(argv) == 0
    assert (tmp_path / "c.png").is_file()
    assert script.main(["curves", "--history", str(history), "--out", str(tmp_path / "d.png")]) == 2
    assert "report_figures: error: --history takes NAME=PATH items" in capsys.readouterr().err
