"""Seed quality of one relevance-map store on a split (rule eval_cams).

Sweeps the background parameter (a fixed background score, or the exponent alpha of
(1 - max_c map_c)^alpha), keeps the one with the best mIoU and writes: the per-class
table at that parameter (CSV + Markdown), the sweep table (parameter, mIoU, ...), and a
one-row summary (stage "relevance map", method, split, means, and the best parameter in a
column named after the mode: ``threshold`` or ``alpha``).
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd

from wsss_core.cam_store import CamReader
from wsss_core.cli import script_main
from wsss_core.data.voc import read_class_names, read_split
from wsss_core.evaluation import stage_tables
from wsss_core.seeds import (
    DEFAULT_ALPHAS,
    DEFAULT_THRESHOLDS,
    MODES,
    best_threshold,
    sweep_thresholds,
)
from wsss_core.tables import write_table

STAGE = "relevance map"

log = logging.getLogger("eval_cams")


def sweep_frame(sweep: dict, mode: str) -> pd.DataFrame:
    """One row per swept parameter with the mean scores (percent)."""
    rows = [{mode: value, **sweep[value].scores().summary()} for value in sorted(sweep)]
    return pd.DataFrame(rows)


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True, help="relevance-map store cams/<method>.h5")
    parser.add_argument("--data-root", required=True, help="dataset root in VOC layout")
    parser.add_argument("--split", default="train")
    parser.add_argument("--mode", choices=MODES, default="threshold")
    parser.add_argument(
        "--values",
        type=float,
        nargs="+",
        default=None,
        help="background scores (threshold mode; default 0.05..0.95) or alphas "
        "(alpha mode; default 1 2 4 8 16 32)",
    )
    parser.add_argument("--method", default=None, help="method name (default: the store's)")
    parser.add_argument("--out-csv", required=True, help="per-class table at the best value")
    parser.add_argument("--out-md", default=None, help="the same as Markdown")
    parser.add_argument("--out-sweep", required=True, help="sweep table (value, mIoU, ...)")
    parser.add_argument("--out-summary", required=True, help="one-row summary CSV")
    args = parser.parse_args(argv)

    values = args.values or list(DEFAULT_THRESHOLDS if args.mode == "threshold" else DEFAULT_ALPHAS)
    class_names = read_class_names(args.data_root)
    ids = read_split(args.data_root, args.split)
    with CamReader(args.store) as reader:
        method = args.method or reader.method
    log.info("%s: %d %s images, %s sweep over %s", method, len(ids), args.split, args.mode, values)

    sweep = sweep_thresholds(
        args.store, args.data_root, ids, len(class_names) + 1, values, args.mode, progress=True
    )
    sweep_table = sweep_frame(sweep, args.mode)
    best, cm = best_threshold(sweep)
    summary, per_class = stage_tables(
        cm, class_names, STAGE, method, args.split, extra={args.mode: best}
    )
    write_table(per_class, args.out_csv, args.out_md)
    write_table(sweep_table, args.out_sweep)
    write_table(summary, args.out_summary)
    log.info("%s: best %s %g, mIoU %.2f", method, args.mode, best, summary.loc[0, "mIoU"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
