"""Figures of the report: a sample grid through the stages, training curves, runtimes per rule.

Sample grid, one row per image, columns and the split each comes from:

============== ======================================================= ============
column         source                                                  split
============== ======================================================= ============
image          ``JPEGImages/<id>.jpg``                                 train, val
ground truth   ``SegmentationClass/<id>.png``                          train, val
relevance map  max over classes of ``CamReader.upsampled(id)``, as a   train
               heat overlay on the image
seeds          CRF seeds ``<seeds_dir>/<id>.png``                      train
random walk    random-walk pseudo mask ``<rw_dir>/<id>.png``           train
segmenter      segmenter prediction ``<pred_dir>/<id>.png``            val
============== ======================================================= ============

A panel whose source has nothing for an image (relevance maps, seeds and random-walk
masks exist for the train split only, segmenter predictions for the val split only)
is drawn blank with "n/a". Masks use the VOC palette; ignored pixels (255) are white.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from wsss_core.data.layout import load_gt_mask, load_image, mask_path  # noqa: E402
from wsss_core.data.palette import IGNORE_INDEX, colorize, load_mask  # noqa: E402
from wsss_core.io import atomic_path  # noqa: E402

PathLike = str | os.PathLike
Panel = np.ndarray | None  # RGB uint8 [H, W, 3], or None for "n/a"

PANEL_INCHES = 1.6
SAMPLE_COLUMNS = ("image", "ground truth", "relevance map", "seeds", "random walk", "segmenter")


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
    colours = plt.get_cmap("jet")(np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
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


def relevance_heat(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Max over classes of [K, H, W] maps; an image without classes (K = 0) gives zeros."""
    if maps.shape[0] == 0:
        return np.zeros(size, dtype=np.float32)
    return maps.max(axis=0)


def _mask_or_none(folder: PathLike | None, image_id: str) -> np.ndarray | None:
    if folder is None:
        return None
    path = Path(folder) / f"{image_id}.png"
    return load_mask(path) if path.is_file() else None


# --------------------------------------------------------------------------------------
# Sample grid


def figure_grid(
    rows: Sequence[Mapping[str, Panel]],
    row_labels: Sequence[str] | None = None,
    panel_inches: float = PANEL_INCHES,
) -> Figure:
    """A grid of panels: one row per mapping, columns named by the first row's keys.

    Every row must have the same keys. A None panel is blank with "n/a". The figure is
    ``columns * panel_inches`` wide and ``rows * panel_inches`` high.
    """
    if not rows:
        raise ValueError("figure_grid needs at least one row")
    columns = list(rows[0])
    for i, row in enumerate(rows):
        if list(row) != columns:
            raise ValueError(f"row {i} has panels {list(row)}, expected {columns}")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
    fig = Figure(figsize=(len(columns) * panel_inches, len(rows) * panel_inches))
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            panel = row[name]
            if panel is None:
                ax.text(
                    0.5, 0.5, "n/a", ha="center", va="center", color="0.5", transform=ax.transAxes
                )
            else:
                ax.imshow(panel, interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=7)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=6)
    fig.subplots_adjust(
        left=0.06, right=0.99, bottom=0.01, top=1 - 0.25 / len(rows), wspace=0.04, hspace=0.06
    )
    return fig


def sample_ids(ids: Sequence[str], count: int) -> list[str]:
    """A fixed sample of ``count`` ids spread evenly over the list (first and last included)."""
    if count <= 0 or not ids:
        return []
    if count >= len(ids):
        return list(ids)
    positions = np.linspace(0, len(ids) - 1, count).round().astype(int)
    return [ids[p] for p in dict.fromkeys(positions.tolist())]


def sample_rows(
    data_root: PathLike,
    ids: Sequence[str],
    store_path: PathLike | None = None,
    seeds_dir: PathLike | None = None,
    rw_dir: PathLike | None = None,
    pred_dir: PathLike | None = None,
) -> list[dict[str, Panel]]:
    """The panels of SAMPLE_COLUMNS for each id; a source without the id gives None."""
    with contextlib.ExitStack() as stack:
        reader = None
        if store_path is not None:
            from wsss_core.cams.store import CamReader

            reader = stack.enter_context(CamReader(store_path))
        stored = set(reader.ids()) if reader is not None else set()
        return [
            _sample_row(data_root, i, reader if i in stored else None, seeds_dir, rw_dir, pred_dir)
            for i in ids
        ]


def _sample_row(
    data_root: PathLike,
    image_id: str,
    reader,
    seeds_dir: PathLike | None,
    rw_dir: PathLike | None,
    pred_dir: PathLike | None,
) -> dict[str, Panel]:
    image = load_image(data_root, image_id)
    heat = None
    if reader is not None:
        maps, _ = reader.upsampled(image_id)
        heat = heat_overlay(image, relevance_heat(maps, image.shape[:2]))
    masks = [_mask_or_none(folder, image_id) for folder in (seeds_dir, rw_dir, pred_dir)]
    # an image of a split without ground truth gets an empty panel
    has_gt = mask_path(data_root, image_id).is_file()
    gt = mask_rgb(load_gt_mask(data_root, image_id)) if has_gt else None
    panels = [image, gt, heat]
    panels += [None if m is None else mask_rgb(m) for m in masks]
    return dict(zip(SAMPLE_COLUMNS, panels, strict=True))


def samples_figure(
    data_root: PathLike,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    store_path: PathLike | None = None,
    seeds_dir: PathLike | None = None,
    rw_dir: PathLike | None = None,
    pred_dir: PathLike | None = None,
) -> Figure:
    """The sample grid: train images first, then val images; rows labelled ``id (split)``."""
    ids = [*train_ids, *val_ids]
    labels = [f"{i} (train)" for i in train_ids] + [f"{i} (val)" for i in val_ids]
    rows = sample_rows(data_root, ids, store_path, seeds_dir, rw_dir, pred_dir)
    return figure_grid(rows, labels)


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


def training_curves(history_csvs: Mapping[str, PathLike], panel_inches: float = 2.6) -> Figure:
    """One panel per network: losses per epoch (train_loss, val_loss) on the left axis,
    other validation metrics (val_*) dashed on the right axis."""
    if not history_csvs:
        raise ValueError("training_curves needs at least one history")
    fig = Figure(figsize=(len(history_csvs) * panel_inches * 1.3, panel_inches))
    axes = fig.subplots(1, len(history_csvs), squeeze=False)[0]
    for ax, (name, path) in zip(axes, history_csvs.items(), strict=True):
        history = read_history(path)
        for column in ("train_loss", "val_loss"):
            if column in history.columns:
                ax.plot(history["epoch"], history[column], marker=".", label=column)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        metrics = [c for c in history.columns if c.startswith("val_") and c != "val_loss"]
        handles, labels = ax.get_legend_handles_labels()
        if metrics:
            right = ax.twinx()
            for i, column in enumerate(metrics):
                right.plot(
                    history["epoch"],
                    history[column],
                    linestyle="--",
                    color=f"C{i + 2}",
                    label=column,
                )
            right.set_ylabel("metric", fontsize=8)
            right.tick_params(labelsize=7)
            more_handles, more_labels = right.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        ax.legend(handles, labels, fontsize=6, loc="best")
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

    A file's repeats (several rows) are averaged before summing over the rule's jobs.
    """
    if not benchmark_tsvs:
        raise ValueError("no benchmark files given")
    records = []
    for path in benchmark_tsvs:
        frame = _read_table(path, "benchmark file", sep="\t", na_values=["-", "NA"])
        if "s" not in frame.columns or frame.empty:
            raise ValueError(f"benchmark file {path} has no 's' column or no rows; re-run its rule")
        rss = frame["max_rss"].mean() if "max_rss" in frame.columns else float("nan")
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
    fig = Figure(figsize=(6.0, 0.8 + 0.25 * len(table)))
    ax = fig.subplots()
    ax.barh(table["rule"][::-1], table["seconds"][::-1], color="C0")
    ax.set_xlabel("seconds (sum over a rule's jobs)", fontsize=8)
    ax.tick_params(labelsize=7)
    for y, seconds in enumerate(table["seconds"][::-1]):
        ax.text(seconds, y, f" {seconds:.1f}", va="center", fontsize=6)
    fig.tight_layout()
    return fig, table


def save_figure(fig: Figure, path: PathLike, dpi: int = 100) -> None:
    """Write a figure as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
