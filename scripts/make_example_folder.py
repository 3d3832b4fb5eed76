"""Write a small folder of "your own data" (README, Your own data): images of several sizes and
formats, masks, classes.txt and a label table per split (``wsss_core.data.folder_example``).

    python scripts/make_example_folder.py data/my_data [--num-train 60 --num-val 20]
        [--masks all|train|none]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wsss_core.data.folder_example import MASKS, write_example_folder  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to write")
    parser.add_argument("--num-train", type=int, default=60, help="images of the train split")
    parser.add_argument("--num-val", type=int, default=20, help="images of the val split")
    parser.add_argument(
        "--masks", choices=MASKS, default="all",
        help="the splits with masks (the others have no ground truth)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if Path(args.out).exists():
        parser.error(f"{args.out} exists; give a new folder")
    write_example_folder(args.out, args.num_train, args.num_val, masks=args.masks)
    print(f"wrote {args.out}: {args.num_train} train and {args.num_val} val images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
