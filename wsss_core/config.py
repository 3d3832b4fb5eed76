"""Config checks with key-named errors: every violation of the workflow's JSON schema as one
line that starts with the config key it is about (rules/common.smk calls it at start-up)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema.validators import validator_for


def config_key(path: Iterable[Any]) -> str:
    """The dotted name of a config key from a JSON-schema path: ['cams', 'methods', 1] ->
    'cams.methods[1]'."""
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def config_errors(cfg: Mapping[str, Any], schema_file: str | Path) -> list[str]:
    """Every violation of the schema, one line each, starting with the config key it is about.

    snakemake.utils.validate stops at the first error and prints the whole schema section;
    this lists them all, names unknown and missing keys, and quotes the schema's description
    of the expected value where it has one."""
    schema = yaml.safe_load(Path(schema_file).read_text())
    validator = validator_for(schema)(schema)
    lines = []
    for err in sorted(validator.iter_errors(cfg), key=lambda e: config_key(e.absolute_path)):
        where = config_key(err.absolute_path)
        prefix = "" if where == "(top level)" else f"{where}."
        if err.validator == "additionalProperties" and err.validator_value is False:
            known = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(known)):
                lines.append(
                    f"config key {prefix}{key}: unknown key (known keys under {where}: "
                    f"{', '.join(known)})"
                )
        elif err.validator == "required" and isinstance(err.instance, dict):
            for key in err.validator_value:
                if key not in err.instance:
                    lines.append(f"config key {prefix}{key}: missing (required under {where})")
        else:
            expected = err.schema.get("description") if isinstance(err.schema, dict) else None
            hint = f" (expected: {expected})" if expected else ""
            lines.append(f"config key {where}: {err.message}{hint}")
    return lines


def check_config(cfg: Mapping[str, Any], schema_file: str | Path) -> None:
    """Raise ValueError listing every violation of ``schema_file``, one line each."""
    errors = config_errors(cfg, schema_file)
    if errors:
        raise ValueError(
            f"the config does not match {Path(schema_file).name}:\n  "
            + "\n  ".join(errors)
            + "\nFix them in config.yaml or in the file given with --configfile (which extends it)."
        )
