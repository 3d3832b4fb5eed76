"""One table comparing every relevance-map method's seed quality (rule compare_cams).

Built from the one-row summaries written by eval_cams (and, for per-class IoU columns,
their per-class tables, given in the same order): method, best background parameter,
mIoU, mean precision, mean recall, then IoU per class; best mIoU first.
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd

from wsss_core.cli import script_main
from wsss_core.evaluate.masks import comparison_table
from wsss_core.io import write_table

log = logging.getLogger("compare_cams")


def read_csv(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"cannot read table {path}: {err}; re-run eval_cams") from err


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--summaries", nargs="+", required=True, help="cams_<M>_summary.csv files")
    parser.add_argument(
        "--per-class",
        nargs="+",
        default=None,
        help="cams_<M>.csv per-class tables, in the order of --summaries",
    )
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-md", default=None)
    args = parser.parse_args(argv)

    summaries = [read_csv(path) for path in args.summaries]
    per_class = [read_csv(path) for path in args.per_class] if args.per_class else None
    if per_class is not None and len(per_class) != len(summaries):
        parser.error(f"--per-class has {len(per_class)} files for {len(summaries)} --summaries")
    table = comparison_table(summaries, per_class, sources=args.summaries)
    write_table(table, args.out_csv, args.out_md)
    log.info("compared %d methods; best: %s", len(table), table.loc[0, "method"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
