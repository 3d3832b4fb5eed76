"""Gather per-shard mask folders into one folder (rules gather_seeds, gather_pseudo)."""

from __future__ import annotations

import argparse
import logging

from wsss_core.cli import script_main
from wsss_core.shards import gather_mask_dirs


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", nargs="+", required=True, help="per-shard mask folders")
    parser.add_argument("--out", required=True, help="the gathered folder")
    args = parser.parse_args(argv)
    count = gather_mask_dirs(args.shards, args.out)
    logging.info("gathered %d masks from %d shards into %s", count, len(args.shards), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
