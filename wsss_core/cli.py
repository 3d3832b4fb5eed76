"""Command-line helpers shared by the workflow scripts."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from collections.abc import Callable
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


def script_main(main: ScriptMain) -> Callable[[list[str] | None], int]:
    """Decorate a workflow script's ``main(argv)``: log to stderr (the rule's log file), and turn
    an expected error into one last line ``<script>: error: <message>`` and exit code 2.

    The rules print the last line of a failed job's log into the terminal, so that line is
    what the user reads beside Snakemake's failure summary.
    """

    script = Path(inspect.getfile(main)).stem

    @functools.wraps(main)
    def guarded(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
        try:
            code = main(argv)
        except EXPECTED_ERRORS as err:
            message = " ".join(str(err).split()) or type(err).__name__
            # a new line first: a progress bar may have left the cursor mid-line
            print(f"\n{script}: error: {message}", file=sys.stderr, flush=True)
            return EXIT_EXPECTED
        return int(code or 0)

    return guarded
