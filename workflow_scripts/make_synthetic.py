"""Write the synthetic VOC-format dataset (textured shapes on clutter) into a directory.

The dataset is written into a temporary directory beside ``--root`` and renamed onto
it when complete, so an interrupted run never leaves a dataset that looks finished.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from tqdm import tqdm

from wsss_core.atomic import atomic_directory
from wsss_core.cli import script_main
from wsss_core.data.synthetic import MAX_CLASSES, check_args, generate_dataset

log = logging.getLogger("make_synthetic")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="dataset directory to create (replaced)")
    parser.add_argument(
        "--num-classes", type=int, required=True, help=f"classes K (1..{MAX_CLASSES})"
    )
    parser.add_argument("--image-size", type=int, required=True, help="image side in pixels")
    parser.add_argument("--num-train", type=int, required=True, help="images in the train split")
    parser.add_argument("--num-val", type=int, required=True, help="images in the val split")
    parser.add_argument("--seed", type=int, required=True, help="random seed")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (1..100)")
    return parser.parse_args(argv)


@script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(
        args.num_classes,
        args.image_size,
        args.num_train,
        args.num_val,
        args.jpeg_quality,
        args.seed,
    )
    total = args.num_train + args.num_val
    log.info(
        "writing %d synthetic images (%d train, %d val, %d classes, %d px, seed %d) to %s",
        total, args.num_train, args.num_val, args.num_classes, args.image_size, args.seed,
        args.root,
    )  # fmt: skip
    start = time.perf_counter()
    with (
        atomic_directory(args.root) as tmp,
        tqdm(total=total, desc="synthetic", unit="img", file=sys.stderr) as bar,
    ):
        generate_dataset(
            tmp,
            num_classes=args.num_classes,
            image_size=args.image_size,
            num_train=args.num_train,
            num_val=args.num_val,
            seed=args.seed,
            jpeg_quality=args.jpeg_quality,
            progress=bar.update,
        )
    log.info("done in %.1f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
