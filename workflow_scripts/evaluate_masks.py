"""Score a folder of label masks against the ground truth of a split (rules eval_*).

Works for any palette-PNG masks ``<pred-dir>/<id>.png``: confident seeds, random-walk
masks, CRF masks, segmenter predictions. Pixels a mask leaves unsure (255) are left out
of the scores; the summary's ``coverage`` column is the percent of labelled ground-truth
pixels that the masks label (100 for complete masks). A split without ground truth gets the
same tables with "no ground truth" in every score cell, once every mask is there.
"""

from __future__ import annotations

import argparse
import logging

from wsss_core.cli import add_options, script_main
from wsss_core.data.layout import read_class_names, read_split, split_has_masks
from wsss_core.evaluate.masks import (
    check_predictions,
    evaluate_masks_detailed,
    no_ground_truth_tables,
    stage_tables,
)
from wsss_core.io import write_table

log = logging.getLogger("eval_masks")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pred-dir", required=True, help="folder of <id>.png label masks")
    add_options(parser, "data-root")
    parser.add_argument("--split", required=True)
    parser.add_argument("--stage", required=True, help='stage name, e.g. "random walk"')
    parser.add_argument("--method", required=True, help="relevance method the masks come from")
    parser.add_argument("--out-summary", required=True, help="one-row summary CSV")
    parser.add_argument("--out-per-class", required=True, help="per-class table CSV")
    parser.add_argument("--out-md", default=None, help="per-class table as Markdown")
    args = parser.parse_args(argv)

    class_names = read_class_names(args.data_root)
    ids = read_split(args.data_root, args.split)
    if not split_has_masks(args.data_root, args.split):
        check_predictions(args.pred_dir, ids)
        summary, per_class = no_ground_truth_tables(
            class_names, args.stage, args.method, args.split, extra=("coverage",)
        )
        write_table(summary, args.out_summary)
        write_table(per_class, args.out_per_class, args.out_md)
        log.info("%s (%s, %s): no ground truth", args.stage, args.method, args.split)
        return 0
    evaluation = evaluate_masks_detailed(
        args.pred_dir, args.data_root, ids, len(class_names) + 1, progress=True
    )
    summary, per_class = stage_tables(
        evaluation.confusion,
        class_names,
        args.stage,
        args.method,
        args.split,
        extra={"coverage": evaluation.coverage},
    )
    write_table(summary, args.out_summary)
    write_table(per_class, args.out_per_class, args.out_md)
    log.info(
        "%s (%s, %s): mIoU %.2f over %.1f%% of labelled pixels",
        args.stage,
        args.method,
        args.split,
        summary.loc[0, "mIoU"],
        evaluation.coverage,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
