"""Figures of the report: the same train images through every stage, the relevance methods
side by side, val predictions, training curves and runtimes per rule.

Sample grid (``samples_figure``), one row per train image (relevance maps, seeds and walk
masks exist for the train split only), columns:

=================== ===========================================================
column              source
=================== ===========================================================
image               ``JPEGImages/<id>.jpg``
ground truth        ``SegmentationClass/<id>.png``
relevance: <class>  ``CamReader.upsampled(id)``, one panel per class of the image,
                    as a heat overlay on the image (jet, 0 to the map's maximum)
seeds               CRF seeds ``<seeds_dir>/<id>.png`` (white: unsure)
random walk         random-walk pseudo mask ``<rw_dir>/<id>.png``
segmenter           the segmenter's prediction of the image (``segmenter_masks``)
=================== ===========================================================

An image has as many relevance panels as classes; the grid has as many relevance columns
as the image with most classes, and an image with fewer leaves the rest empty. A missing
source is an error naming it (no panel is left out). Masks use the VOC palette with ignored
or unsure pixels (255) white; a legend names each colour.

Methods figure (``methods_figure``): one row per train image, the image, its ground truth,
then the map of one class of the image (the one covering most ground-truth pixels) from
each method's store. Val figure (``val_samples_figure``): image, ground truth and the
segmenter's predictions without and with CRF, as scored.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from wsss_core.data.layout import (  # noqa: E402
    load_gt_mask,
    load_image,
    mask_path,
    read_class_names,
)
from wsss_core.data.palette import IGNORE_INDEX, VOC_PALETTE, colorize, load_mask  # noqa: E402
from wsss_core.io import atomic_path  # noqa: E402

PathLike = str | os.PathLike

PANEL_INCHES = 1.6
FONT_PT = 9  # every label, title and legend entry of the figures
HEAT_CMAP = "jet"


# --------------------------------------------------------------------------------------
# Panels


def mask_rgb(mask: np.ndarray) -> np.ndarray:
    """A label mask in VOC colours, ignored pixels (255) white."""
    rgb = colorize(mask)
    rgb[mask == IGNORE_INDEX] = 255
    return rgb


def heat_overlay(image: np.ndarray, heat: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (jet colours) over an RGB image: (1 - w) image + w heat."""
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat map {heat.shape} and image {image.shape[:2]} differ in size")
    colours = plt.get_cmap(HEAT_CMAP)(np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - weight) * image.astype(np.float64) + weight * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def mask_overlay(image: np.ndarray, mask: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Blend a label mask's VOC colours over an RGB image, (1 - w) image + w colour, where it
    marks a class; background (0) and ignored (255) pixels show the image as it is."""
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    blended = (1.0 - weight) * image.astype(np.float64) + weight * colorize(mask)
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    marked = (mask != 0) & (mask != IGNORE_INDEX)
    return np.where(marked[..., None], blended, image).astype(np.uint8)


def palette_colour(label: int) -> tuple[float, float, float]:
    """The VOC colour of ``label`` as matplotlib RGB in [0, 1]."""
    r, g, b = VOC_PALETTE[3 * label : 3 * label + 3]
    return (r / 255.0, g / 255.0, b / 255.0)


def legend_entries(class_names: Sequence[str]) -> list[tuple[str, tuple[float, float, float]]]:
    """(name, colour) of background, each class (label c + 1) and unsure / ignored (white)."""
    entries = [("background", palette_colour(0))]
    entries += [(name, palette_colour(c + 1)) for c, name in enumerate(class_names)]
    return entries + [("unsure / ignored", (1.0, 1.0, 1.0))]


def _mask_file(folder: PathLike, image_id: str, what: str, rule: str) -> np.ndarray:
    path = Path(folder) / f"{image_id}.png"
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; re-run rule {rule}")
    return load_mask(path)


@dataclass
class Panel:
    """One picture of a grid and, optionally, its own title (else its column's, top row)."""

    image: np.ndarray
    title: str | None = None


# --------------------------------------------------------------------------------------
# Grid of panels, row labels, column titles, colour legend and heat bar


def panel_grid(
    rows: Sequence[Sequence[Panel | None]],
    row_labels: Sequence[str],
    column_titles: Sequence[str | None],
    legend: Sequence[tuple[str, tuple[float, float, float]]] = (),
    heat_bar: bool = False,
    panel_inches: float = PANEL_INCHES,
) -> Figure:
    """A grid of panels laid out in inches: ``panel_inches`` square panels, labels at
    ``FONT_PT`` points. ``rows[r][c]`` is a Panel or None (an empty slot: nothing drawn).
    Column titles go above the top row; a panel's own title goes above it in any row.
    Below the grid: the colour ``legend`` (name, RGB) and, with ``heat_bar``, the heat scale.
    With no rows the figure says so."""
    if len(row_labels) != len(rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
    for i, row in enumerate(rows):
        if len(row) != len(column_titles):
            raise ValueError(f"row {i} has {len(row)} panels for {len(column_titles)} columns")
    if not rows:
        fig = Figure(figsize=(4.0, 1.0))
        fig.text(0.5, 0.5, "no images sampled (config report)", ha="center", va="center",
                 fontsize=FONT_PT)  # fmt: skip
        return fig
    ncols = len(column_titles)
    title_in = 0.3  # room above every row for titles
    left_in, right_in, gap_in = 0.35, 0.1, 0.06
    legend_cols = max(1, min(len(legend), int((ncols * panel_inches) // 1.5)))
    legend_rows = math.ceil(len(legend) / legend_cols) if legend else 0
    footer_in = (0.15 + 0.22 * legend_rows if legend else 0.0) + (0.55 if heat_bar else 0.0)
    width = left_in + ncols * panel_inches + (ncols - 1) * gap_in + right_in
    height = len(rows) * (panel_inches + title_in) + footer_in + 0.05
    fig = Figure(figsize=(width, height))
    for r, row in enumerate(rows):
        top = height - r * (panel_inches + title_in) - title_in
        for c, panel in enumerate(row):
            x = left_in + c * (panel_inches + gap_in)
            ax = fig.add_axes(
                (x / width, (top - panel_inches) / height, panel_inches / width,
                 panel_inches / height)
            )  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.set_axis_off()
            else:
                ax.imshow(panel.image, interpolation="nearest")
                title = panel.title or (column_titles[c] if r == 0 else None)
                if title:
                    ax.set_title(title, fontsize=FONT_PT, pad=3)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=FONT_PT)
    if legend:
        handles = [Patch(facecolor=colour, edgecolor="0.3", label=name) for name, colour in legend]
        above_bar = (0.55 if heat_bar else 0.0) / height
        fig.legend(
            handles=handles, ncol=legend_cols, fontsize=FONT_PT, frameon=False,
            loc="lower left", bbox_to_anchor=(left_in / width, above_bar),
            handlelength=1.2, columnspacing=1.0,
        )  # fmt: skip
    if heat_bar:
        bar_width = min(2.0, ncols * panel_inches / 3)
        cax = fig.add_axes((left_in / width, 0.3 / height, bar_width / width, 0.12 / height))
        mappable = plt.cm.ScalarMappable(norm=Normalize(0.0, 1.0), cmap=HEAT_CMAP)
        bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
        bar.set_ticks([0.0, 0.5, 1.0])
        bar.ax.tick_params(labelsize=FONT_PT)
        cax.text(1.03, 0.5, "relevance (each map divided by its maximum)", fontsize=FONT_PT,
                 va="center", transform=cax.transAxes)  # fmt: skip
    return fig


# --------------------------------------------------------------------------------------
# The same train images through every stage


def relevance_panels(
    image: np.ndarray, maps: np.ndarray, classes: Sequence[int], class_names: Sequence[str]
) -> list[Panel]:
    """One heat overlay per class map of ``maps`` [K, H, W], titled with the class name."""
    if maps.shape[0] != len(classes):
        raise ValueError(f"{maps.shape[0]} maps for {len(classes)} classes")
    return [
        Panel(heat_overlay(image, heat), f"relevance: {class_names[c]}")
        for heat, c in zip(maps, classes, strict=True)
    ]


def segmenter_masks(
    model_path: PathLike,
    data_root: PathLike,
    ids: Sequence[str],
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """The segmenter's label mask (argmax of ``wsss_core.segmenter.predict.predict``, as
    rule predict_segmenter without CRF) of each image of ``ids``."""
    from wsss_core.segmenter.model import load_segmenter
    from wsss_core.segmenter.predict import predict

    model, info = load_segmenter(model_path, device)
    masks = {}
    for image_id in ids:
        probs = predict(model, load_image(data_root, image_id), info["mean"], info["std"],
                        scales, flip)  # fmt: skip
        masks[image_id] = probs.argmax(axis=0).astype(np.uint8)
    return masks


@dataclass
class SampleRow:
    """The panels of one train image through the stages (truth None: no ground truth)."""

    image_id: str
    image: np.ndarray
    truth: np.ndarray | None
    relevance: list[Panel]
    seeds: np.ndarray
    walk: np.ndarray
    prediction: np.ndarray


def ground_truth(data_root: PathLike, image_id: str) -> np.ndarray | None:
    """The image's ground-truth mask; None for an image of a split without masks."""
    if not mask_path(data_root, image_id).is_file():
        return None
    return load_gt_mask(data_root, image_id)


def truth_panel(truth: np.ndarray | None) -> Panel | None:
    """The ground-truth panel, empty (None) without ground truth."""
    return None if truth is None else Panel(mask_rgb(truth))


def sample_rows(
    data_root: PathLike,
    ids: Sequence[str],
    store_path: PathLike,
    seeds_dir: PathLike,
    rw_dir: PathLike,
    predictions: Mapping[str, np.ndarray],
) -> list[SampleRow]:
    """Every stage's picture of each image; a source without the image is an error."""
    class_names = read_class_names(data_root)
    from wsss_core.cams.store import CamReader

    rows = []
    with CamReader(store_path) as reader:
        for image_id in ids:
            image = load_image(data_root, image_id)
            maps, classes = reader.upsampled(image_id)
            if image_id not in predictions:
                raise KeyError(f"no segmenter prediction of {image_id}")
            rows.append(
                SampleRow(
                    image_id=image_id,
                    image=image,
                    truth=ground_truth(data_root, image_id),
                    relevance=relevance_panels(image, maps, classes, class_names),
                    seeds=mask_rgb(_mask_file(seeds_dir, image_id, "seed mask", "gather_seeds")),
                    walk=mask_rgb(_mask_file(rw_dir, image_id, "random-walk mask", "gather_walk")),
                    prediction=mask_rgb(predictions[image_id]),
                )
            )
    return rows


def samples_figure(rows: Sequence[SampleRow], class_names: Sequence[str]) -> Figure:
    """The sample grid of ``sample_rows`` with the class-colour legend and the heat scale."""
    slots = max((len(row.relevance) for row in rows), default=0)
    titles = ["image", "ground truth", *[None] * slots, "seeds", "random walk", "segmenter"]
    grid = [
        [
            Panel(row.image),
            truth_panel(row.truth),
            *row.relevance,
            *[None] * (slots - len(row.relevance)),
            Panel(row.seeds),
            Panel(row.walk),
            Panel(row.prediction),
        ]  # fmt: skip
        for row in rows
    ]
    return panel_grid(grid, [row.image_id for row in rows], titles,
                      legend_entries(class_names), heat_bar=slots > 0)  # fmt: skip


def val_samples_figure(
    data_root: PathLike, ids: Sequence[str], pred_dir: PathLike, crf_dir: PathLike
) -> Figure:
    """Val images as the segmenter was scored: image, ground truth, prediction, + CRF."""
    grid = []
    for image_id in ids:
        grid.append([
            Panel(load_image(data_root, image_id)),
            truth_panel(ground_truth(data_root, image_id)),
            Panel(mask_rgb(_mask_file(pred_dir, image_id, "prediction", "predict_segmenter"))),
            Panel(mask_rgb(_mask_file(crf_dir, image_id, "prediction", "predict_segmenter"))),
        ])  # fmt: skip
    titles = ["image", "ground truth", "segmenter", "segmenter + CRF"]
    return panel_grid(grid, list(ids), titles, legend_entries(read_class_names(data_root)))


# --------------------------------------------------------------------------------------
# Relevance methods side by side


def shown_class(classes: Sequence[int], truth: np.ndarray) -> int:
    """The class of ``classes`` (0-based) covering most ground-truth pixels (label c + 1);
    the first on a tie or when none is in the mask."""
    if not classes:
        raise ValueError("the image has no class to show")
    areas = [int((truth == c + 1).sum()) for c in classes]
    return classes[int(np.argmax(areas))]


def methods_figure(
    data_root: PathLike, ids: Sequence[str], stores: Mapping[str, PathLike]
) -> Figure:
    """One row per image: image, ground truth, then each method's map of the image's
    ``shown_class`` (row label ``id: class``), one column per method in ``stores`` order."""
    if not stores:
        raise ValueError("methods_figure needs at least one relevance store")
    from wsss_core.cams.store import CamReader

    class_names = read_class_names(data_root)
    grid, labels = [], []
    with contextlib.ExitStack() as stack:
        readers = {m: stack.enter_context(CamReader(p)) for m, p in stores.items()}
        for image_id in ids:
            image = load_image(data_root, image_id)
            truth = ground_truth(data_root, image_id)
            row = [Panel(image), truth_panel(truth)]
            shown = None
            for method, reader in readers.items():
                maps, classes = reader.upsampled(image_id)
                if shown is None:
                    shown = shown_class(classes, np.zeros(1) if truth is None else truth)
                if shown not in classes:
                    raise ValueError(
                        f"cam store {stores[method]} has no map of class {class_names[shown]} "
                        f"for {image_id}; rerun extract_cams and gather_cams for {method}"
                    )
                row.append(Panel(heat_overlay(image, maps[classes.index(shown)])))
            grid.append(row)
            labels.append(f"{image_id}: {class_names[shown]}")
    titles = ["image", "ground truth", *stores]
    return panel_grid(grid, labels, titles, legend_entries(class_names), heat_bar=True)


# --------------------------------------------------------------------------------------
# Training curves


def _read_table(path: PathLike, what: str, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` whose errors (unreadable, empty, not CSV) name the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"cannot read {what} {path} ({err}); re-run its rule") from err


def read_history(path: PathLike) -> pd.DataFrame:
    """A ``history.csv`` (epoch, train_loss, lr, optional val_* columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training history {path} does not exist; run its training rule")
    frame = _read_table(path, "training history")
    missing = [c for c in ("epoch", "train_loss") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"training history {path} lacks column(s) {missing}; re-run its training rule"
        )
    return frame


def is_metric_column(column: str) -> bool:
    """A validation metric of a history (``val_*`` that is no loss)."""
    return column.startswith("val_") and not column.endswith("_loss")


def training_curves(history_csvs: Mapping[str, PathLike], panel_inches: float = 2.8) -> Figure:
    """One column per network: its losses per epoch on top (``train_loss`` solid,
    ``val_loss`` dashed), every validation metric (``val_*`` but losses) below; a network
    without validation metrics says so in that panel."""
    if not history_csvs:
        raise ValueError("training_curves needs at least one history")
    ncols = len(history_csvs)
    fig = Figure(figsize=(ncols * panel_inches * 1.25, 2 * panel_inches + 0.4))
    axes = fig.subplots(2, ncols, squeeze=False)
    for c, (name, path) in enumerate(history_csvs.items()):
        history = read_history(path)
        top, bottom = axes[0, c], axes[1, c]
        for column, style in (("train_loss", "-"), ("val_loss", "--")):
            if column in history.columns:
                top.plot(history["epoch"], history[column], linestyle=style, marker="o",
                         markersize=3, label=column)  # fmt: skip
        top.set_title(name, fontsize=FONT_PT + 1)
        top.set_ylabel("loss", fontsize=FONT_PT)
        top.legend(fontsize=FONT_PT, loc="best")
        metrics = [col for col in history.columns if is_metric_column(col)]
        for i, column in enumerate(metrics):
            bottom.plot(history["epoch"], history[column], linestyle="--", marker="o",
                        markersize=3, color=f"C{i + 2}", label=column)  # fmt: skip
        if metrics:
            bottom.legend(fontsize=FONT_PT, loc="best")
            bottom.set_ylabel("validation metric", fontsize=FONT_PT)
        else:
            bottom.text(0.5, 0.5, "no validation metric", ha="center", va="center",
                        fontsize=FONT_PT, color="0.4", transform=bottom.transAxes)  # fmt: skip
        for ax in (top, bottom):
            ax.set_xlabel("epoch", fontsize=FONT_PT)
            ax.tick_params(labelsize=FONT_PT)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if len(history) == 1:
                ax.set_xlim(history["epoch"].iloc[0] - 1, history["epoch"].iloc[0] + 1)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Runtimes from Snakemake benchmark files


def benchmark_rule(path: PathLike) -> str:
    """The rule of a benchmark file ``.../benchmarks/<rule>/<wildcards...>.tsv``
    (the folder after ``benchmarks``; the parent folder when there is none)."""
    parts = Path(path).parts
    if "benchmarks" in parts[:-2]:
        return parts[len(parts) - 1 - parts[::-1].index("benchmarks") + 1]
    return Path(path).parent.name


def runtime_table(benchmark_tsvs: Sequence[PathLike]) -> pd.DataFrame:
    """Per rule: jobs, total seconds and the largest max_rss (MB), longest first.

    A file's repeats (several rows) are averaged before summing over the rule's jobs. A
    ``max_rss`` of 0 is Snakemake sampling a process that had already exited (jobs shorter
    than its first sample): it is read as not measured (NaN), like ``-`` and ``NA``.
    """
    if not benchmark_tsvs:
        raise ValueError("no benchmark files given")
    records = []
    for path in benchmark_tsvs:
        frame = _read_table(path, "benchmark file", sep="\t", na_values=["-", "NA"])
        if "s" not in frame.columns or frame.empty:
            raise ValueError(f"benchmark file {path} has no 's' column or no rows; re-run its rule")
        rss = float("nan")
        if "max_rss" in frame.columns:
            rss = frame["max_rss"].where(frame["max_rss"] > 0).mean()
        records.append(
            {"rule": benchmark_rule(path), "seconds": frame["s"].mean(), "max_rss_mb": rss}
        )
    jobs = pd.DataFrame(records)
    table = jobs.groupby("rule", sort=False).agg(
        jobs=("seconds", "size"), seconds=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max")
    )
    return table.sort_values("seconds", ascending=False, kind="stable").reset_index()


def runtime_chart(benchmark_tsvs: Sequence[PathLike]) -> tuple[Figure, pd.DataFrame]:
    """Horizontal bars of the seconds per rule, and the table behind them (``runtime_table``)."""
    table = runtime_table(benchmark_tsvs)
    fig = Figure(figsize=(7.0, 0.9 + 0.28 * len(table)))
    ax = fig.subplots()
    ax.barh(table["rule"][::-1], table["seconds"][::-1], color="C0")
    ax.set_xlabel("seconds (sum over a rule's jobs)", fontsize=FONT_PT)
    ax.tick_params(labelsize=FONT_PT)
    ax.set_xlim(0, table["seconds"].max() * 1.3)
    for y, (seconds, jobs) in enumerate(
        zip(table["seconds"][::-1], table["jobs"][::-1], strict=True)
    ):
        text = f" {seconds:.1f} s" + (f" ({jobs} jobs)" if jobs > 1 else "")
        ax.text(seconds, y, text, va="center", fontsize=FONT_PT)
    fig.tight_layout()
    return fig, table


def save_figure(fig: Figure, path: PathLike, dpi: int = 100) -> None:
    """Write a figure as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
