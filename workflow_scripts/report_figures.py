"""Figures for the report (rule figures): a sample grid, training curves, runtimes per rule.

Subcommands:
  samples   image | ground truth | relevance map | seeds | random walk | segmenter for a
            fixed sample of train and val ids (evenly spread over each split);
            relevance maps, seeds and random-walk masks exist for train images,
            segmenter predictions for val images: other panels read "n/a".
  curves    loss per epoch (and val metrics) from history.csv files, one panel per network.
  runtimes  seconds per rule summed from Snakemake benchmark TSVs, as a bar chart and CSV.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wsss_core.cli import UserError, config_json, script_main
from wsss_core.data.layout import read_split
from wsss_core.io import write_table
from wsss_core.report.figures import (
    runtime_chart,
    sample_ids,
    samples_figure,
    save_figure,
    training_curves,
)

log = logging.getLogger("figures")


def _samples(args: argparse.Namespace) -> None:
    keys = ("num_train_samples", "num_val_samples")
    cfg = config_json(args.config_json, "report", keys)
    args.num_train, args.num_val = (int(cfg[k]) for k in keys)
    train_ids = sample_ids(read_split(args.data_root, args.train_split), args.num_train)
    val_ids = sample_ids(read_split(args.data_root, args.val_split), args.num_val)
    fig = samples_figure(
        args.data_root,
        train_ids,
        val_ids,
        store_path=args.store,
        seeds_dir=args.seeds_dir,
        rw_dir=args.rw_dir,
        pred_dir=args.pred_dir,
    )
    save_figure(fig, args.out, dpi=args.dpi)
    log.info("wrote %s (%d train, %d val images)", args.out, len(train_ids), len(val_ids))


def _curves(args: argparse.Namespace) -> None:
    histories = {}
    for item in args.history:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--history takes NAME=PATH items, got '{item}'")
        histories[name] = path
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
    log.info(
        "wrote %s and %s (%d rules, %d files)", args.out_png, args.out_csv, len(table), len(files)
    )


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    samples = sub.add_parser("samples", help="sample grid through the stages")
    samples.add_argument("--data-root", required=True)
    samples.add_argument("--train-split", required=True)
    samples.add_argument("--val-split", required=True)
    samples.add_argument(
        "--config-json", required=True,
        help="config section report {num_train_samples, num_val_samples} as a JSON object",
    )  # fmt: skip
    samples.add_argument("--store", default=None, help="relevance-map store (.h5) of the method")
    samples.add_argument("--seeds-dir", default=None, help="CRF seeds folder")
    samples.add_argument("--rw-dir", default=None, help="random-walk pseudo-mask folder")
    samples.add_argument("--pred-dir", default=None, help="segmenter prediction folder")
    samples.add_argument("--out", required=True, help="PNG")
    samples.set_defaults(run=_samples)

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
    runtimes.set_defaults(run=_runtimes)

    for sub_parser in (samples, curves, runtimes):
        sub_parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
