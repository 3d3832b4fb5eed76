"""Gather the convert_coco shards into the COCO 2014 dataset tree: rule prepare_coco.

    python workflow_scripts/data_prepare_coco.py --shards DIR... --train-images DIR \\
        --val-images DIR --out ROOT

ROOT gets JPEGImages/ (hard links to the extracted images), SegmentationClass/,
Annotations/, ImageSets/Segmentation/{train,val}.txt and classes.txt (the 80 COCO names)
(wsss_core.data.coco_prepare).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wsss_core.cli import script_main
from wsss_core.data.coco_prepare import gather_tree

log = logging.getLogger("prepare_coco")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", nargs="+", required=True, type=Path, help="shard folders")
    parser.add_argument("--train-images", required=True, type=Path, help="train2014/ images")
    parser.add_argument("--val-images", required=True, type=Path, help="val2014/ images")
    parser.add_argument("--out", required=True, type=Path, help="the dataset root")
    args = parser.parse_args(argv)
    images = {"train": args.train_images, "val": args.val_images}
    prepared = gather_tree(args.shards, images, args.out)
    for split, ids in prepared.splits.items():
        log.info("%s: %d images", split, len(ids))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
