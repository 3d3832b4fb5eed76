"""Copy the demo's tables into README.md between their markers (run after `make demo`).

The README's demo tables are never typed by hand: this script pastes the Markdown that
the workflow wrote under results/<run>/tables/.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

BLOCKS = {
    "demo-summary": "summary.md",
    "demo-cams": "cams_comparison.md",
    "demo-walk-ceiling": "walk_ceiling_transformer_attribution.md",
}


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tables", default="results/demo/tables")
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text()
    for name, table in BLOCKS.items():
        text = replace_block(text, name, (Path(args.tables) / table).read_text())
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
