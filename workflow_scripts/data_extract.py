"""Extract one archive (tar or zip) safely into a folder: rule extract_coco.

    python workflow_scripts/data_extract.py --archive train2014.zip --out DIR \\
        [--strip-prefix train2014]

Only members under --strip-prefix are extracted, with the prefix removed. A finished
extraction of the same archive (recognised by the stamp the extraction writes last) is
reused unless --re-extract is given. An unsafe member (absolute path, '..', a link leading
outside, a device file) stops it with one line naming the member.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wsss_core.cli import script_main
from wsss_core.data.download import is_extracted, safe_extract

log = logging.getLogger("extract")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, type=Path, help="tar or zip archive")
    parser.add_argument("--out", required=True, type=Path, help="the folder to extract into")
    parser.add_argument("--strip-prefix", default="", help="archive folder to extract")
    parser.add_argument(
        "--re-extract", action="store_true", help="extract again even if already extracted"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


@script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.re_extract and is_extracted(args.archive, args.out, args.strip_prefix):
        log.info("%s is already extracted from %s; reusing it", args.out, args.archive)
        return 0
    log.info("extracting %s into %s", args.archive, args.out)
    safe_extract(
        args.archive,
        args.out,
        strip_prefix=args.strip_prefix or None,
        progress=not args.no_progress,
        stamp=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
