"""Download one file (http(s), file:// or a local path), resuming and verifying its checksum.

    python workflow_scripts/data_download.py --url URL --out FILE [--md5 X | --sha256 X]

FILE appears only when complete and verified; an interrupted transfer keeps
FILE.part, which the next run resumes.
"""

from __future__ import annotations

import argparse
import logging

from wsss_core.cli import UserError, script_main
from wsss_core.data.download import DownloadError, download

log = logging.getLogger("download_file")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http(s) URL, file:// URL or local path")
    parser.add_argument(
        "--missing", default=None, help="the error to give when --url is empty (a config key unset)"
    )
    parser.add_argument("--out", required=True, help="destination file")
    parser.add_argument("--md5", help="expected md5 (hex)")
    parser.add_argument("--sha256", help="expected sha256 (hex)")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout, seconds")
    parser.add_argument("--retries", type=int, default=2, help="retries after an interruption")
    parser.add_argument("--retry-wait", type=float, default=5.0, help="seconds x attempt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


@script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.url:
        raise UserError(args.missing or "--url is empty; give the URL or path to download")
    try:
        download(
            args.url,
            args.out,
            md5=args.md5,
            sha256=args.sha256,
            timeout=args.timeout,
            retries=args.retries,
            retry_wait=args.retry_wait,
            progress=not args.no_progress,
        )
    except DownloadError as err:  # a RuntimeError; its message says what to do
        raise UserError(str(err)) from err
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
