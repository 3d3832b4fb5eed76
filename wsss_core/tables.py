"""Result tables: one pandas DataFrame written as CSV and as Markdown."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from wsss_core.atomic import atomic_path


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """Render a table as GitHub Markdown (numbers with ``floatfmt``)."""
    return df.to_markdown(index=False, floatfmt=floatfmt) + "\n"


def write_table(
    df: pd.DataFrame,
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike | None = None,
    floatfmt: str = ".2f",
) -> None:
    """Write ``df`` as CSV (full precision) and, when asked, as Markdown; both atomically."""
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    if md_path is not None:
        with atomic_path(Path(md_path)) as tmp:
            tmp.write_text(to_markdown(df, floatfmt))
