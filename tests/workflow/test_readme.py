"""README.md stays true: its config key table is the one scripts/update_readme_keys.py writes
from the schema and documents every key, and its layout section matches the tree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from wsss_core.config import resolve

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import update_readme_keys  # noqa: E402  (scripts/ is no package)

CODE_SPAN = re.compile(r"`([^`]+)`")


def schema_keys(node: dict, schema: dict, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf key of ``node`` (``$ref`` resolved in ``schema``) and of every
    object with free-form keys (its keys: ``<rule>``)."""
    keys: set[str] = set()
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        child = resolve(child, schema)
        if isinstance(child.get("additionalProperties"), dict):
            keys.add(path)
        if "properties" in child or isinstance(child.get("additionalProperties"), dict):
            keys |= schema_keys(child, schema, path + ".")
        else:
            keys.add(path)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        keys |= schema_keys(resolve(extra, schema), schema, f"{prefix}<rule>.")
    return keys


def expand(cell: str) -> set[str]:
    """``a.{b, c}`` -> {a.b, a.c}; ``a.*`` stays a prefix pattern."""
    match = re.fullmatch(r"(.*)\{([^}]*)\}", cell)
    if match is None:
        return {cell}
    return {match.group(1) + name.strip() for name in match.group(2).split(",")}


def documented_keys(readme: str) -> set[str]:
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            for span in CODE_SPAN.findall(first_cell):
                keys |= expand(span)
    return keys


def is_documented(key: str, documented: set[str]) -> bool:
    return key in documented or any(d.endswith(".*") and key.startswith(d[:-1]) for d in documented)


def test_expand_braces() -> None:
    assert expand("a.b.{c, d}") == {"a.b.c", "a.b.d"}
    assert expand("run") == {"run"}
    assert is_documented("x.crf.iterations", {"x.crf.*"})
    assert not is_documented("x.crfs", {"x.crf.*"})


def test_every_schema_key_is_in_the_readme_table() -> None:
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    keys = schema_keys(schema, schema)
    assert {"run", "classifier.backbone", "resources.rules.<rule>.mem_mb"} <= keys
    documented = documented_keys((REPO / "README.md").read_text())
    missing = sorted(k for k in keys if not is_documented(k, documented))
    assert not missing, f"config keys missing from README.md's table: {missing}"
    unknown = sorted(d for d in documented if not d.endswith(".*") and d not in keys)
    assert not unknown, f"README.md documents keys the schema does not have: {unknown}"


def layout_block(readme: str) -> str:
    section = readme.split("## Layout\n", 1)[1]
    return section.split("```\n", 2)[1]


def test_layout_section_matches_the_tree() -> None:
    """Every tracked top-level folder, wsss_core package and module, rule file and tests
    folder is named in README's layout, and every path the layout names exists."""
    block = layout_block((REPO / "README.md").read_text())
    named = set(re.findall(r"[\w.]+/?", block))
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    top = {f"{path.split('/')[0]}/" for path in tracked if "/" in path and not path.startswith(".")}
    assert top <= named, f"not in README's layout: {sorted(top - named)}"
    core = REPO / "wsss_core"
    packages = {f"{p.name}/" for p in core.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.name for p in core.glob("*.py")} - {"__init__.py"}
    assert packages | modules <= named, (
        f"not in README's layout: {sorted(packages | modules - named)}"
    )
    stages = {p.stem for p in (REPO / "rules").glob("*.smk")} - {"common"}
    assert stages <= named, f"rule files not in README's layout: {sorted(stages - named)}"
    for folder in ("unit/", "workflow/", "support/"):
        assert folder in named and (REPO / "tests" / folder).is_dir()
    for entry in re.findall(r"^(\S+/)", block, re.M):
        assert (REPO / entry).is_dir(), f"README's layout names {entry}, which does not exist"


def test_the_key_table_is_generated_from_the_schema() -> None:
    """The table's defaults and meanings are the schema's (run scripts/update_readme_keys.py
    after changing the schema or config.yaml)."""
    readme = (REPO / "README.md").read_text()
    assert update_readme_keys.readme_block(readme) == update_readme_keys.key_table(REPO), (
        "README.md's config key table is out of date: run python scripts/update_readme_keys.py"
    )
    table = update_readme_keys.key_table(REPO)
    assert "| `segmenter.net.epochs` | `12` | `10` | training epochs |" in table
    assert "| `walk.crf.*` | as `seeds.crf` |" in table
