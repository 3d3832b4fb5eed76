"""Command-line helpers shared by the workflow scripts."""

from __future__ import annotations

import json
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
