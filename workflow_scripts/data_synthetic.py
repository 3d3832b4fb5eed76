"""Write the synthetic VOC-format dataset (family data.synthetic.style) into a directory.

The dataset is written into a temporary directory beside ``--root`` and renamed onto
it when complete, so an interrupted run never leaves a dataset that looks finished.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from tqdm import tqdm

from wsss_core.cli import config_json, script_main
from wsss_core.data.synthetic import STYLES, check_args, generate_dataset, max_classes
from wsss_core.io import atomic_directory

log = logging.getLogger("make_synthetic")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="dataset directory to create (replaced)")
    parser.add_argument(
        "--config-json", required=True,
        help="config section data.synthetic as a JSON object: num_classes "
        f"(1..{min(map(max_classes, STYLES))}), image_size, num_train, num_val, seed, "
        f"style ({' or '.join(STYLES)})",
    )  # fmt: skip
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (1..100)")
    args = parser.parse_args(argv)
    keys = ("num_classes", "image_size", "num_train", "num_val", "seed", "style")
    cfg = config_json(args.config_json, "data.synthetic", keys)
    args.num_classes, args.image_size, args.num_train, args.num_val, args.seed, args.style = (
        cfg[k] for k in keys
    )
    return args


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
        args.style,
    )
    total = args.num_train + args.num_val
    log.info(
        "writing %d synthetic %s images (%d train, %d val, %d classes, %d px, seed %d) to %s",
        total, args.style, args.num_train, args.num_val, args.num_classes, args.image_size,
        args.seed, args.root,
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
            style=args.style,
        )
    log.info("done in %.1f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
