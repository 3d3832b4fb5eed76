"""Assemble the run's summary tables from the per-stage tables (rule summary).

``--inputs`` are one-row stage summaries and ``--per-class-inputs`` the per-class
tables of the same stages, in the same order. Writes the summary (one row per stage
and method, in pipeline order) and the per-class IoU table (class x stage), each as
CSV and Markdown.
"""

from __future__ import annotations

import argparse
import logging

from wsss_core.cli import script_main
from wsss_core.evaluate.masks import score_text
from wsss_core.io import write_table
from wsss_core.report.summary import summary_tables

log = logging.getLogger("summary")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", nargs="+", required=True, help="one-row summary CSVs")
    parser.add_argument(
        "--per-class-inputs", nargs="+", required=True, help="per-class CSVs, same order"
    )
    parser.add_argument("--out-csv", required=True, help="summary table CSV")
    parser.add_argument("--out-md", default=None, help="summary table Markdown")
    parser.add_argument("--out-per-class", required=True, help="per-class IoU table CSV")
    parser.add_argument("--out-per-class-md", default=None, help="per-class IoU table Markdown")
    args = parser.parse_args(argv)

    summary, per_class = summary_tables(args.inputs, args.per_class_inputs)
    write_table(summary, args.out_csv, args.out_md)
    write_table(per_class, args.out_per_class, args.out_per_class_md)
    for _, row in summary.iterrows():
        log.info(
            "%-18s %-24s %-6s mIoU %6s",
            row["stage"],
            row["method"],
            row["split"],
            score_text(row["mIoU"]),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
