"""Write the image-level label table of a split (image_id + one 0/1 column per class)."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from wsss_core.cli import script_main
from wsss_core.data.labels import SOURCES, build_label_table, write_label_table
from wsss_core.data.layout import read_split

log = logging.getLogger("make_labels")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="dataset root (VOC 2012 layout)")
    parser.add_argument("--split", required=True, help="split name (ImageSets/Segmentation)")
    parser.add_argument(
        "--source", choices=SOURCES, required=True, help="config key data.label_source"
    )
    parser.add_argument("--out", required=True, help="output CSV (labels/<split>.csv)")
    return parser.parse_args(argv)


@script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    total = len(read_split(args.root, args.split))
    with tqdm(total=total, desc=f"labels {args.split}", unit="img", file=sys.stderr) as bar:
        table = build_label_table(args.root, args.split, args.source, progress=bar.update)
    write_label_table(table, args.out)
    counts = table.iloc[:, 1:].sum(axis=0)
    log.info("%d images of split '%s' -> %s", len(table), args.split, args.out)
    log.info("images per class: %s", ", ".join(f"{c} {n}" for c, n in counts.items()))
    unlabelled = int((table.iloc[:, 1:].sum(axis=1) == 0).sum())
    if unlabelled:
        log.warning("%d images have no foreground class", unlabelled)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
