"""Command-line helpers shared by the workflow scripts."""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class JSONArgumentError(ValueError):
    """A JSON command-line argument is not valid JSON or not a JSON object."""


def parse_json_object(
    text: str, option: str, section: str, error: type[Exception] = JSONArgumentError
) -> dict[str, Any]:
    """Parse ``text``, the value of ``option``, as a JSON object (a config ``section``).

    Invalid JSON or any other JSON value than an object raises ``error`` with a message
    naming the option and the config section.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(
            f"{option} is not valid JSON ({err}); check the config section {section}"
        ) from err
    if not isinstance(value, dict):
        raise error(
            f"{option} must be a JSON object (config section {section}), got {type(value).__name__}"
        )
    return value


class UserError(Exception):
    """An expected failure (bad input or config): its message names the file or config key and
    says what to do. Scripts print it as one line, never as a traceback."""


# Errors a script turns into one line and exit code 2: ours, bad values, files that are missing,
# unreadable or unwritable, a training run that diverged. Anything else is a bug: a traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ValueError,
    OSError,
    FloatingPointError,
)
EXIT_EXPECTED = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


ScriptMain = Callable[[list[str] | None], int | None]


# Options several workflow scripts take, each declared once: name -> the arguments it adds
COMMON_OPTIONS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "data-root": (("--data-root", {"required": True, "help": "dataset root in VOC layout"}),),
    "store": (("--store", {"required": True, "help": "relevance-map store cams/<method>.h5"}),),
    "shards": (
        ("--shard", {"type": int, "default": 0, "help": "0-based shard index"}),
        ("--num-shards", {"type": int, "default": 1, "help": "number of shards"}),
    ),
    "device": (
        ("--device", {"required": True, "help": "config key device: auto | cpu | cuda[:N]"}),
        ("--threads", {"type": int, "default": None, "help": "torch CPU threads"}),
    ),
    "seed": (("--seed", {"type": int, "required": True, "help": "config key seed"}),),
}


def add_options(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the common options ``names`` (keys of COMMON_OPTIONS) to ``parser``."""
    for name in names:
        for flag, kwargs in COMMON_OPTIONS[name]:
            parser.add_argument(flag, **kwargs)


def split_log_option(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` without ``--log PATH`` (or ``--log=PATH``), and PATH (None when absent)."""
    rest, log_file = [], None
    args = iter(argv)
    for arg in args:
        if arg == "--log":
            log_file = next(args, None)
            if log_file is None:
                raise SystemExit("--log needs a file name")
        elif arg.startswith("--log="):
            log_file = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, log_file


def last_line(path: str | Path) -> str:
    """The last non-empty line of a text file ('' when there is none)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line.strip()), "")


def script_main(main: ScriptMain | None = None, *, name: str | None = None) -> Any:
    """Decorate a workflow script's ``main(argv)``: log to stderr, and turn an expected error
    into one last line ``<script>: error: <message>`` and exit code 2 (``<script>`` is the
    file's stem, or ``name`` with ``@script_main(name=...)``).

    ``--log PATH`` (every rule passes its log file) sends everything the script writes to
    PATH: file descriptors 1 and 2 are redirected, so progress bars and the output of C
    libraries go there too. When the script fails, the log's last line (the one-line error,
    or the last line of a traceback) is also printed to the original stderr, where the user
    reads it beside Snakemake's failure summary.
    """

    if main is None:
        return functools.partial(script_main, name=name)
    script = name or Path(inspect.getfile(main)).stem

    @functools.wraps(main)
    def guarded(argv: list[str] | None = None) -> int:
        argv, log_file = split_log_option(list(sys.argv[1:] if argv is None else argv))
        if log_file is None:
            return _run(main, script, argv)
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        failed = True
        try:
            with open(log_file, "w") as log:
                for fd in (1, 2):
                    os.dup2(log.fileno(), fd)
            try:
                code = _run(main, script, argv)
            except SystemExit:  # argparse: its message is already in the log
                raise
            except BaseException:  # a bug: its traceback goes to the log as well
                traceback.print_exc()
                raise SystemExit(1) from None
            failed = code != 0
            return code
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            if failed:
                line = last_line(log_file) or f"{script}: failed"
                print(line, file=sys.stderr, flush=True)

    return guarded


def _run(main: ScriptMain, script: str, argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
    try:
        code = main(argv)
    except EXPECTED_ERRORS as err:
        message = " ".join(str(err).split()) or type(err).__name__
        # a new line first: a progress bar may have left the cursor mid-line
        print(f"\n{script}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_EXPECTED
    return int(code or 0)


def config_json(text: str, section: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The value of ``--config-json``: config section ``section`` (or the part of it a rule
    passes) as a JSON object that holds at least ``keys``. Defaults live in the workflow's
    schema, not in the scripts: a missing key is an error that names it."""
    cfg = parse_json_object(text, "--config-json", section)
    missing = [f"{section}.{key}" for key in keys if key not in cfg]
    if missing:
        raise JSONArgumentError(
            f"--config-json lacks the config key(s) {', '.join(missing)}; pass the config "
            f"section {section} (rules/*.smk does)"
        )
    return cfg


@contextlib.contextmanager
def progress_bar(total: int, desc: str, unit: str = "img") -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr: yields ``update(n)``, to call after every n items done.

    tqdm's bar where tqdm is installed; otherwise one plain line ``<desc>: done/total <unit>``
    about every 10 % of the way (and at the end).
    """
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        with tqdm(total=total, desc=desc, unit=unit) as bar:
            yield bar.update
        return
    done = 0
    step = max(1, total // 10)

    def update(n: int = 1) -> None:
        nonlocal done
        before, done = done, done + n
        if done >= total or done // step > before // step:
            print(f"{desc}: {done}/{total} {unit}", file=sys.stderr, flush=True)

    yield update
