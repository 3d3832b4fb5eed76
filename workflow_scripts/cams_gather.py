"""Gather the shard stores of one relevance method into a single store (rule gather_cams)."""

from __future__ import annotations

import argparse
import logging

from wsss_core.cams.store import merge_stores
from wsss_core.cli import script_main

log = logging.getLogger("gather_cams")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", nargs="+", required=True, help="shard stores (.h5)")
    parser.add_argument("--out", required=True, help="merged store cams/<method>.h5")
    args = parser.parse_args(argv)
    count = merge_stores(args.shards, args.out)
    log.info("gathered %d images from %d shards into %s", count, len(args.shards), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
