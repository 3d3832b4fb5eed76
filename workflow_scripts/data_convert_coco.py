"""Convert one shard of COCO 2014's instance annotations into label masks: rule convert_coco.

    python workflow_scripts/data_convert_coco.py --annotations DIR --train-images DIR \\
        --val-images DIR --shard I --num-shards N --out SHARD_DIR

Reads annotations/instances_{train,val}2014.json and writes, for every N-th annotated image
(from I) of train2014 and val2014, SHARD_DIR/SegmentationClass/<id>.png (0 background,
1..80 the categories in COCO's order, 255 crowd regions), SHARD_DIR/Annotations/<id>.xml
(the image-level labels) and SHARD_DIR/ImageSets/Segmentation/{train,val}.txt
(wsss_core.data.coco_prepare). Rule prepare_coco gathers the shards into the dataset tree.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wsss_core.cli import progress_bar, script_main
from wsss_core.data.coco_prepare import SPLITS, convert_shard

log = logging.getLogger("convert_coco")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--annotations", required=True, type=Path, help="annotations/ of the annotation zip"
    )
    parser.add_argument("--train-images", required=True, type=Path, help="train2014/ images")
    parser.add_argument("--val-images", required=True, type=Path, help="val2014/ images")
    parser.add_argument("--shard", type=int, default=0, help="this shard, 0-based")
    parser.add_argument("--num-shards", type=int, default=1, help="number of shards")
    parser.add_argument("--out", required=True, type=Path, help="the shard's folder")
    return parser.parse_args(argv)


@script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    instances = {
        split: args.annotations / f"instances_{folder}.json" for split, folder in SPLITS.items()
    }
    images = {"train": args.train_images, "val": args.val_images}
    with progress_bar(0, f"convert_coco {args.shard + 1}/{args.num_shards}") as update:
        count = convert_shard(instances, images, args.shard, args.num_shards, args.out, update)
    log.info("shard %d of %d: %d images -> %s", args.shard, args.num_shards, count, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
