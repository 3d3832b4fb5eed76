"""Extract the VOC 2012 (and SBD) archives safely and build the train_aug split and masks.

    python workflow_scripts/data_prepare_voc.py --voc-archive VOCtrainval_11-May-2012.tar \\
        [--sbd-archive benchmark.tgz] --out DIR

Writes DIR/VOC2012 (the dataset root: VOCdevkit/VOC2012 of the archive plus
classes.txt, SegmentationClassAug/ and ImageSets/Segmentation/train_aug.txt)
and DIR/SBD (benchmark_RELEASE/dataset of benchmark.tgz). A finished extraction
of the same archive (recognised by the stamp the extraction writes last) is
reused unless --re-extract is given. Without --sbd-archive, train_aug is VOC
train alone. Expected errors (a missing or unsafe archive, an incomplete tree)
end with one line ``prepare_voc: error: <message>`` and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wsss_core.cli import script_main
from wsss_core.data.download import SBD_BENCHMARK, VOC2012_TRAINVAL, is_extracted, safe_extract
from wsss_core.data.voc_prepare import prepare_voc

log = logging.getLogger("prepare_voc")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc-archive", required=True, type=Path, help="VOCtrainval tar")
    parser.add_argument("--sbd-archive", type=Path, help="SBD benchmark.tgz (optional)")
    parser.add_argument("--out", required=True, type=Path, help="folder for VOC2012/ and SBD/")
    parser.add_argument(
        "--re-extract", action="store_true", help="extract again even if already extracted"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def extract(archive: Path, target: Path, strip_prefix: str, force: bool, progress: bool) -> Path:
    """Extract ``archive`` into ``target`` unless a finished extraction of it is already there.

    A finished extraction carries the stamp ``safe_extract`` writes just before renaming its
    temporary folder onto ``target``; a folder that merely exists (Snakemake creates the
    parents of a rule's outputs) or came from another archive is extracted again.
    """
    if not force and is_extracted(archive, target, strip_prefix):
        log.info(
            "%s is already extracted from %s; reusing it (--re-extract to redo)", target, archive
        )
        return target
    log.info("extracting %s into %s", archive, target)
    return safe_extract(archive, target, strip_prefix=strip_prefix, progress=progress, stamp=True)


@script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = not args.no_progress
    voc_root = extract(
        args.voc_archive,
        args.out / "VOC2012",
        VOC2012_TRAINVAL.strip_prefix,
        args.re_extract,
        progress,
    )
    sbd_root = None
    if args.sbd_archive is not None:
        sbd_root = extract(
            args.sbd_archive,
            args.out / "SBD",
            SBD_BENCHMARK.strip_prefix,
            args.re_extract,
            progress,
        )
    prepared = prepare_voc(voc_root, sbd_root, progress=progress)
    log.info("train_aug: %d ids in %s", len(prepared.train_aug), voc_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
