"""Figures for the report (rules figure_*): sample grids, relevance methods, training curves,
runtimes per rule.

Subcommands:
  samples   the same train images through every stage, one row each: image | ground truth |
            the relevance map of each class of the image | seeds | random walk | segmenter
            (predicted here from the segmenter model, as predict_segmenter without CRF);
            and val images as scored: image | ground truth | segmenter | segmenter + CRF.
            Images evenly spread over each split (config report).
  methods   every relevance method side by side on the same train images: the map of the
            image's largest class from each method's store.
  curves    loss per epoch and validation metrics from history.csv files, one column per network.
  runtimes  seconds per rule summed from Snakemake benchmark TSVs, as a bar chart, CSV and HTML.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wsss_core.cli import UserError, config_json, script_main
from wsss_core.data.layout import read_class_names, read_split, sample_ids
from wsss_core.io import write_table
from wsss_core.report.figures import (
    methods_figure,
    runtime_chart,
    sample_rows,
    samples_figure,
    save_figure,
    segmenter_masks,
    training_curves,
    val_samples_figure,
)
from wsss_core.report.tables import write_table_html
from wsss_core.runtime import select_device, set_threads

log = logging.getLogger("figures")


def _name_path_items(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{option} takes NAME=PATH items, got '{item}'")
        pairs[name] = path
    return pairs


def _samples(args: argparse.Namespace) -> None:
    keys = ("num_train_samples", "num_val_samples")
    cfg = config_json(args.config_json, "report", keys)
    inference = config_json(args.inference_json, "segmenter.inference", ("scales", "flip"))
    train_ids = sample_ids(read_split(args.data_root, args.train_split), int(cfg[keys[0]]))
    val_ids = sample_ids(read_split(args.data_root, args.val_split), int(cfg[keys[1]]))
    set_threads(args.threads)
    device = select_device(args.device)
    predictions = segmenter_masks(
        args.segmenter, args.data_root, train_ids,
        scales=[float(s) for s in inference["scales"]], flip=bool(inference["flip"]),
        device=device,
    )  # fmt: skip
    rows = sample_rows(
        args.data_root, train_ids, args.store, args.seeds_dir, args.rw_dir, predictions
    )
    save_figure(samples_figure(rows, read_class_names(args.data_root)), args.out, dpi=args.dpi)
    fig = val_samples_figure(args.data_root, val_ids, args.pred_dir, args.crf_dir)
    save_figure(fig, args.out_val, dpi=args.dpi)
    log.info("wrote %s (%d train images) and %s (%d val images)",
             args.out, len(train_ids), args.out_val, len(val_ids))  # fmt: skip


def _methods(args: argparse.Namespace) -> None:
    cfg = config_json(args.config_json, "report", ("num_train_samples",))
    ids = sample_ids(read_split(args.data_root, args.train_split), int(cfg["num_train_samples"]))
    stores = _name_path_items(args.store, "--store")
    save_figure(methods_figure(args.data_root, ids, stores), args.out, dpi=args.dpi)
    log.info("wrote %s (%d images x %d methods)", args.out, len(ids), len(stores))


def _curves(args: argparse.Namespace) -> None:
    histories = _name_path_items(args.history, "--history")
    save_figure(training_curves(histories), args.out, dpi=args.dpi)
    log.info("wrote %s (%s)", args.out, ", ".join(histories))


def _runtimes(args: argparse.Namespace) -> None:
    files = [Path(p) for p in args.benchmarks or []]
    if args.benchmark_dir is not None:
        files += sorted(Path(args.benchmark_dir).rglob("*.tsv"))
    if not files:
        raise UserError("no benchmark files: give --benchmarks or a --benchmark-dir holding TSVs")
    fig, table = runtime_chart(files)
    save_figure(fig, args.out_png, dpi=args.dpi)
    write_table(table, args.out_csv, args.out_md)
    if args.out_html is not None:
        write_table_html(table, args.out_html, "Runtime per rule")
    log.info(
        "wrote %s and %s (%d rules, %d files)", args.out_png, args.out_csv, len(table), len(files)
    )


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    samples = sub.add_parser("samples", help="sample grids through the stages")
    samples.add_argument("--data-root", required=True)
    samples.add_argument("--train-split", required=True)
    samples.add_argument("--val-split", required=True)
    samples.add_argument(
        "--config-json", required=True,
        help="config section report {num_train_samples, num_val_samples} as a JSON object",
    )  # fmt: skip
    samples.add_argument("--store", required=True, help="relevance-map store (.h5) of the method")
    samples.add_argument("--seeds-dir", required=True, help="CRF seeds folder")
    samples.add_argument("--rw-dir", required=True, help="random-walk pseudo-mask folder")
    samples.add_argument("--segmenter", required=True, help="segmenter.pt (train_segmenter)")
    samples.add_argument(
        "--inference-json", required=True,
        help="config section segmenter.inference {scales, flip} as a JSON object",
    )  # fmt: skip
    samples.add_argument("--device", required=True, help="config key device: auto | cpu | cuda[:N]")
    samples.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    samples.add_argument("--pred-dir", required=True, help="val predictions (predict_segmenter)")
    samples.add_argument("--crf-dir", required=True, help="val predictions with CRF")
    samples.add_argument("--out", required=True, help="PNG of the train images")
    samples.add_argument("--out-val", required=True, help="PNG of the val images")
    samples.set_defaults(run=_samples)

    methods = sub.add_parser("methods", help="relevance methods side by side")
    methods.add_argument("--data-root", required=True)
    methods.add_argument("--train-split", required=True)
    methods.add_argument(
        "--config-json", required=True,
        help="config section report {num_train_samples} as a JSON object",
    )  # fmt: skip
    methods.add_argument("--store", nargs="+", required=True, help="METHOD=PATH cam stores")
    methods.add_argument("--out", required=True, help="PNG")
    methods.set_defaults(run=_methods)

    curves = sub.add_parser("curves", help="training curves from history.csv files")
    curves.add_argument("--history", nargs="+", required=True, help="NAME=PATH items")
    curves.add_argument("--out", required=True, help="PNG")
    curves.set_defaults(run=_curves)

    runtimes = sub.add_parser("runtimes", help="runtime per rule from benchmark TSVs")
    runtimes.add_argument("--benchmarks", nargs="*", default=None, help="benchmark TSV files")
    runtimes.add_argument("--benchmark-dir", default=None, help="folder searched for *.tsv")
    runtimes.add_argument("--out-png", required=True)
    runtimes.add_argument("--out-csv", required=True)
    runtimes.add_argument("--out-md", default=None)
    runtimes.add_argument("--out-html", default=None)
    runtimes.set_defaults(run=_runtimes)

    for sub_parser in (samples, methods, curves, runtimes):
        sub_parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
