"""Seed quality of one relevance-map store on a split (rule eval_cams).

Sweeps the background parameter (a fixed background score, or the exponent alpha of
(1 - max_c map_c)^alpha), keeps the one with the best mIoU and writes: the per-class
table at that parameter (CSV + Markdown), the sweep table (parameter, mIoU, ...), and a
one-row summary (stage "relevance map", method, split, means, and the best parameter in a
column named after the mode: ``threshold`` or ``alpha``). With cams.eval.holdout_every = n,
the summary also holds the parameter chosen on every n-th image (``holdout_threshold``) and
the mIoU it gives on the other images (``holdout_mIoU``): the score without the choice seeing
the scored images.
A split without ground truth gets
the same tables with "no ground truth" in every score cell.
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd

from wsss_core.cams.store import CamReader
from wsss_core.cli import add_options, config_json, script_main
from wsss_core.data.layout import read_class_names, read_split, split_has_masks
from wsss_core.evaluate.masks import NO_GROUND_TRUTH, no_ground_truth_tables, stage_tables
from wsss_core.evaluate.sweep import (
    best_threshold,
    holdout_choice,
    merge_sweeps,
    split_holdout,
    sweep_thresholds,
)
from wsss_core.io import write_table
from wsss_core.seeds.labels import MODES

STAGE = "relevance map"

log = logging.getLogger("eval_cams")


def sweep_frame(sweep: dict, mode: str) -> pd.DataFrame:
    """One row per swept parameter with the mean scores (percent)."""
    rows = [{mode: value, **sweep[value].scores().summary()} for value in sorted(sweep)]
    return pd.DataFrame(rows)


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_options(parser, "store", "data-root")
    parser.add_argument("--split", required=True, help="config key data.train_split")
    parser.add_argument(
        "--config-json", required=True,
        help="config keys cams.eval.{mode, values, holdout_every} as a JSON object: background "
        f"scores (mode threshold) or alphas (mode alpha); modes: {', '.join(MODES)}",
    )  # fmt: skip
    parser.add_argument("--method", default=None, help="method name (default: the store's)")
    parser.add_argument("--out-csv", required=True, help="per-class table at the best value")
    parser.add_argument("--out-md", default=None, help="the same as Markdown")
    parser.add_argument("--out-sweep", required=True, help="sweep table (value, mIoU, ...)")
    parser.add_argument("--out-summary", required=True, help="one-row summary CSV")
    args = parser.parse_args(argv)

    cfg = config_json(args.config_json, "cams.eval", ("mode", "values", "holdout_every"))
    args.mode, values = cfg["mode"], [float(v) for v in cfg["values"]]
    if args.mode not in MODES:
        parser.error(f"cams.eval.mode must be one of {', '.join(MODES)}, got {args.mode!r}")
    class_names = read_class_names(args.data_root)
    ids = read_split(args.data_root, args.split)
    with CamReader(args.store) as reader:
        method = args.method or reader.method
    log.info("%s: %d %s images, %s sweep over %s", method, len(ids), args.split, args.mode, values)
    if not split_has_masks(args.data_root, args.split):
        summary, per_class = no_ground_truth_tables(
            class_names, STAGE, method, args.split, extra=(args.mode,)
        )
        scores = {column: NO_GROUND_TRUTH for column in summary.columns[3:] if column != args.mode}
        sweep_table = pd.DataFrame([{args.mode: value, **scores} for value in sorted(values)])
        write_table(per_class, args.out_csv, args.out_md)
        write_table(sweep_table, args.out_sweep)
        write_table(summary, args.out_summary)
        log.info("%s: split %s has no ground truth, nothing to score", method, args.split)
        return 0

    num_classes = len(class_names) + 1
    extra: dict[str, object] = {}
    if cfg["holdout_every"]:
        held_ids, scored_ids = split_holdout(ids, cfg["holdout_every"])
        held, scored = (
            sweep_thresholds(args.store, args.data_root, part, num_classes, values, args.mode,
                             progress=True)
            for part in (held_ids, scored_ids)
        )  # fmt: skip
        sweep = merge_sweeps(held, scored)
        chosen, chosen_cm = holdout_choice(held, scored)
        extra = {f"holdout_{args.mode}": chosen, "holdout_mIoU": 100 * chosen_cm.scores().miou}
        log.info("%s: %s %g chosen on %d held-out images, mIoU %.2f on the other %d",
                 method, args.mode, chosen, len(held_ids), extra["holdout_mIoU"],
                 len(scored_ids))  # fmt: skip
    else:
        sweep = sweep_thresholds(
            args.store, args.data_root, ids, num_classes, values, args.mode, progress=True
        )
    sweep_table = sweep_frame(sweep, args.mode)
    best, cm = best_threshold(sweep)
    summary, per_class = stage_tables(
        cm, class_names, STAGE, method, args.split, extra={args.mode: best, **extra}
    )
    write_table(per_class, args.out_csv, args.out_md)
    write_table(sweep_table, args.out_sweep)
    write_table(summary, args.out_summary)
    log.info("%s: best %s %g, mIoU %.2f", method, args.mode, best, summary.loc[0, "mIoU"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
