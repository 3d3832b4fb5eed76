"""The workflow's config schema: its defaults, and checks with key-named errors.

``schemas/config.schema.yaml`` holds every config key's default, and only it: Snakemake's
``validate`` fills them into the config (rules/common.smk), and the library's config dataclasses
read theirs from it here (``schema_field``, ``schema_default``), so that each value is written
once. ``config_errors`` lists every violation of the schema as one line that starts with the
config key it is about (rules/common.smk calls it at start-up)."""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# the repository root (the package is installed in editable mode, or put on PYTHONPATH by the
# workflow): schemas/ lies beside wsss_core/
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


@functools.cache
def _schema() -> dict[str, Any]:
    if not SCHEMA_FILE.is_file():
        raise FileNotFoundError(
            f"config schema {SCHEMA_FILE} not found: wsss_core reads its defaults from the "
            "repository's schemas/ (install the package in editable mode: pip install -e .)"
        )
    return yaml.safe_load(SCHEMA_FILE.read_text())


def load_schema() -> dict[str, Any]:
    """A copy of the parsed schema (read once per process)."""
    return copy.deepcopy(_schema())


def resolve(node: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """``node``, or the definition its local ``$ref`` (``#/$defs/...``) names in ``schema``
    (default: the workflow's)."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = _schema() if schema is None else schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def schema_node(key: str) -> dict[str, Any]:
    """The schema of the dotted config key ``key`` ("segmenter.net.epochs"), as written at its
    place (its ``default`` and ``description`` there; ``$ref`` not resolved)."""
    node: Mapping[str, Any] = _schema()
    for part in key.split("."):
        properties = resolve(node).get("properties", {})
        if part not in properties:
            raise KeyError(f"{key} is not a config key of {SCHEMA_FILE.name}")
        node = properties[part]
    return dict(node)


def schema_default(key: str) -> Any:
    """The default of the dotted config key ``key`` (a fresh copy)."""
    node = schema_node(key)
    if "default" not in node:
        raise KeyError(f"config key {key} has no default in {SCHEMA_FILE.name}")
    return copy.deepcopy(node["default"])


def section_defaults(section: str) -> dict[str, Any]:
    """The defaults of the keys directly under the config section ``section`` (dotted)."""
    properties = resolve(schema_node(section)).get("properties", {})
    return {k: copy.deepcopy(v["default"]) for k, v in properties.items() if "default" in v}


def fill_defaults(cfg: Mapping[str, Any], section: str) -> dict[str, Any]:
    """A copy of config section ``section`` with the schema's defaults of its missing keys, at
    every depth: what Snakemake's ``validate`` does to the section in a workflow run, for a
    section given by hand (a script run outside the workflow, a test)."""
    filled = copy.deepcopy(dict(cfg))
    _fill(filled, resolve(schema_node(section)))
    return filled


def _fill(instance: dict[str, Any], node: Mapping[str, Any]) -> None:
    for key, child in node.get("properties", {}).items():
        if key not in instance and "default" in child:
            instance[key] = copy.deepcopy(child["default"])
        if isinstance(instance.get(key), dict):
            _fill(instance[key], resolve(child))


def schema_field(key: str, convert: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field whose default is the schema's default of config key ``key``
    (after ``convert``, e.g. ``tuple``); its metadata names the key."""
    value = schema_default(key)
    if convert is not None:
        value = convert(value)
    metadata = {"config_key": key}
    if isinstance(value, list | dict | set):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata=metadata)
    return dataclasses.field(default=value, metadata=metadata)


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
    # imported here: the jobs' environment (envs/wsss.yaml) reads defaults only, without it
    from jsonschema.validators import validator_for

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
