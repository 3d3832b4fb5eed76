"""Extract the PASCAL VOC 2012 test images (rule prepare_voc_test).

    python workflow_scripts/data_prepare_voc_test.py --archive VOC2012test.tar --out DIR

DIR gets ``VOCdevkit/VOC2012`` of the archive (JPEGImages/, ImageSets/Segmentation/test.txt),
extracted safely; every listed image must be there.
"""

from __future__ import annotations

import argparse
import logging

from wsss_core.cli import script_main
from wsss_core.data.download import safe_extract
from wsss_core.segmenter.export import voc_test_ids

log = logging.getLogger("prepare_voc_test")
PREFIX = "VOCdevkit/VOC2012"


@script_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, help="VOC2012test.tar")
    parser.add_argument("--out", required=True, help="folder of the extracted test tree")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    safe_extract(args.archive, args.out, strip_prefix=PREFIX, progress=not args.no_progress)
    ids = voc_test_ids(args.out)
    log.info("%d test images in %s", len(ids), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
