"""Atomic output: files, folders, torch archives and result tables.

Outputs are written under a temporary name and renamed when complete.

A killed job never leaves a file that looks finished: the temporary name sits
beside the target (same filesystem, so the rename is atomic) and is removed on
error. What a killed job left behind (a temporary of the same target) is removed
when the target is written again. Finished outputs take the user's umask, like any
file the user creates (mkstemp and mkdtemp alone would leave them 600 and 700).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: writing a file needs no pandas import
    import pandas as pd

# mkstemp/mkdtemp put 8 characters of this alphabet between prefix and suffix
_RANDOM_PART = "[a-z0-9_]{8}"


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_affixes(target: Path, is_dir: bool) -> tuple[str, str]:
    """(prefix, suffix) of the temporary names of ``target``:
    ``.<name>.<8 random characters>.tmp<ext>``."""
    return f".{target.name}.", ".tmp" if is_dir else f".tmp{target.suffix}"


def remove_stale_temporaries(target: str | os.PathLike, is_dir: bool = False) -> list[Path]:
    """Remove temporaries of ``target`` that a killed job left beside it; return them.

    Only names made for exactly this target match (``.a.h5.*`` is not ``.a.h5.b.h5.*``).
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    prefix, suffix = _temporary_affixes(target, is_dir)
    pattern = re.compile(re.escape(prefix) + _RANDOM_PART + re.escape(suffix))
    removed = []
    for path in target.parent.iterdir():
        if pattern.fullmatch(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The caller writes the file at the yielded path (with any library); the
    suffix is kept so that libraries choosing a format by extension still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    prefix, suffix = _temporary_affixes(target, is_dir=False)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target, is_dir=True)
    prefix, suffix = _temporary_affixes(target, is_dir=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_image(path: str | os.PathLike, image: object) -> None:
    """Write an RGB uint8 [H, W, 3] array as an image (format from the suffix), atomically."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"{path}: an RGB image must be uint8 [H, W, 3], got {pixels.dtype} "
                         f"{pixels.shape}")  # fmt: skip
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, mode="RGB").save(tmp)


def save_torch(path: str | os.PathLike, obj: object) -> None:
    """``torch.save`` atomically. Written through a file object, the archive inside is named
    ``archive`` whatever the temporary name, so the same content always gives the same bytes."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


# --------------------------------------------------------------------------------------
# Result tables: one pandas DataFrame written as CSV and as Markdown


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """Render a table as GitHub Markdown (numbers with ``floatfmt``, also in a column that
    mixes numbers and text, such as a score column with "no ground truth" cells)."""
    shown = df.copy()
    for column in shown.columns:
        if shown[column].dtype == object:
            shown[column] = shown[column].map(
                lambda v: format(v, floatfmt) if isinstance(v, float) else v
            )
    return shown.to_markdown(index=False, floatfmt=floatfmt) + "\n"


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
