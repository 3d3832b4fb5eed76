"""Render the report's tables as HTML pages (rule report_tables).

Each ``--table CSV HTML TITLE`` reads a CSV table and writes it as one self-contained HTML
page titled TITLE (wsss_core.report.tables: numbers as in the Markdown tables, columns
sortable on a click). Snakemake's report shows HTML inline, a CSV only as a download link.
"""

from __future__ import annotations

import argparse
import logging

from wsss_core.cli import script_main
from wsss_core.report.tables import csv_to_html

log = logging.getLogger("report_tables")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--table", nargs=3, action="append", required=True, metavar=("CSV", "HTML", "TITLE"),
        help="a CSV table, the HTML page to write and its title (repeat for more tables)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for csv_path, html_path, title in args.table:
        table = csv_to_html(csv_path, html_path, title)
        log.info("wrote %s (%d rows x %d columns)", html_path, len(table), len(table.columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
