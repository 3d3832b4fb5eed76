"""Write README.md's config key table from schemas/config.schema.yaml (run after changing it).

One row per config key: its default and its description, both from the schema (the one place
they are written), and config.yaml's demo value where it differs from the default. A section
shared through ``$defs`` (the CRF) is listed in full once and then as ``<section>.*``.
tests/workflow/test_readme.py checks that README.md's table is this script's.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml
from update_readme_table import replace_block  # scripts/ is this script's sys.path[0]

from wsss_core.config import resolve

REPO = Path(__file__).resolve().parents[1]
BLOCK = "config-keys"
HEADER = [
    "| key | default | demo (`config.yaml`), where it differs | meaning |",
    "|:----|:--------|:---------------------------------------|:--------|",
]
LONG_LIST = 6  # longer lists are shortened to their first two and last items
CODE_WORD = re.compile(r"[^\s(),;]*[_/<][^\s(),;]*")


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flow(value: Any) -> str:
    """``value`` in YAML flow style, strings unquoted."""
    if isinstance(value, list):
        items = [flow(v) for v in value]
        if len(items) > LONG_LIST:
            items = [*items[:2], "...", items[-1]]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    return scalar(value)


def cell(value: Any) -> str:
    """A default or demo value as a table cell."""
    if isinstance(value, dict) and value:
        entries = list(value.values())
        if all(entry == entries[0] for entry in entries):
            names = ", ".join(f"`{name}`" for name in value)
            return f"{names}, each `{flow(entries[0])}`"
    text = f"`{flow(value)}`"
    if isinstance(value, list) and len(value) > LONG_LIST:
        text += f" ({len(value)} values)"
    return text


def meaning(description: str) -> str:
    """The description, words with ``_``, ``/`` or ``<`` as code (``results/<run>/``)."""
    text = " ".join(description.split())
    return CODE_WORD.sub(lambda m: f"`{m.group(0)}`", text).replace("|", "\\|")


def lookup(config: Any, key: str) -> Any:
    """The value of dotted ``key`` in ``config``, or KeyError."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            raise KeyError(key)
        config = config[part]
    return config


def demo_cell(demo: dict[str, Any], key: str, default: Any) -> str:
    try:
        value = lookup(demo, key)
    except KeyError:
        return ""
    return "" if value == default else cell(value)


def rows(
    node: dict[str, Any],
    schema: dict[str, Any],
    demo: dict[str, Any],
    prefix: str = "",
    shared: dict[str, str] | None = None,
) -> list[str]:
    """The table rows of the keys under ``node`` (dotted names start with ``prefix``)."""
    shared = {} if shared is None else shared
    lines = []
    for name, child in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        target = resolve(child, schema)
        description = child.get("description") or target.get("description", "")
        if "properties" in target:
            ref = child.get("$ref")
            if ref in shared:  # a $defs section listed in full before
                lines.append(f"| `{key}.*` | as `{shared[ref]}` |  | {meaning(description)} |")
                continue
            if ref is not None:
                shared[ref] = key
            lines += rows(target, schema, demo, f"{key}.", shared)
        elif isinstance(target.get("additionalProperties"), dict):
            default = child.get("default", {})
            lines.append(
                f"| `{key}` | {cell(default)} | {demo_cell(demo, key, default)} "
                f"| {meaning(description)} |"
            )
            extra = resolve(target["additionalProperties"], schema)
            lines += rows(extra, schema, {}, f"{key}.<rule>.", shared)
        else:
            default = child["default"]
            lines.append(
                f"| `{key}` | {cell(default)} | {demo_cell(demo, key, default)} "
                f"| {meaning(description)} |"
            )
    return lines


def key_table(repo: Path = REPO) -> str:
    """The whole table, header included, as README.md holds it between its markers."""
    schema = yaml.safe_load((repo / "schemas" / "config.schema.yaml").read_text())
    demo = yaml.safe_load((repo / "config.yaml").read_text())
    return "\n".join([*HEADER, *rows(schema, schema, demo)]) + "\n"


def readme_block(text: str, name: str = BLOCK) -> str:
    """What README.md holds between the markers of block ``name``."""
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    if match is None:
        raise ValueError(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    readme.write_text(replace_block(readme.read_text(), BLOCK, key_table()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
