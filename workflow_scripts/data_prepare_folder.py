"""Check a folder of your own images and write its dataset tree (rule prepare_folder).

    python workflow_scripts/data_prepare_folder.py --folder DIR --splits train val --out TREE

DIR holds classes.txt, images/, masks/ (optional) and <split>.csv per split
(``wsss_core.data.folder``); TREE gets the layout every stage reads. A problem (a missing
image, an unknown class, a mask label out of range) ends with one line naming the file.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from wsss_core.cli import script_main
from wsss_core.data.folder import prepare_folder

log = logging.getLogger("prepare_folder")


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="config key data.folder.path")
    parser.add_argument(
        "--splits", nargs="+", required=True, help="data.train_split and data.eval_split"
    )
    parser.add_argument("--out", required=True, help="the dataset tree to write")
    args = parser.parse_args(argv)
    with tqdm(desc="prepare folder", unit="img", file=sys.stderr) as bar:
        splits = prepare_folder(args.folder, args.out, args.splits, progress=bar.update)
    for split in splits:
        truth = "with masks" if split.has_masks else "no ground truth (no masks)"
        log.info("split %s: %d images, %s", split.name, split.images, truth)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
