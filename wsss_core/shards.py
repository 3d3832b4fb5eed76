"""Scatter/gather helpers: which ids a shard owns, and merging per-shard mask folders."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from wsss_core.io import atomic_directory


def shard_ids(ids: Sequence[str], shard: int, num_shards: int) -> list[str]:
    """The ids shard ``shard`` (0-based) of ``num_shards`` works on: every n-th, from ``shard``."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} of {num_shards} is out of range")
    return list(ids[shard::num_shards])


def gather_mask_dirs(
    shard_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, pattern: str = "*.png"
) -> int:
    """Merge per-shard folders of ``<id>.png`` masks (files matching ``pattern``) into
    ``out_dir`` atomically.

    Files are hard-linked where the filesystem allows (no copy), else copied.
    An id found in two shards is an error: shards must partition the images.
    Returns the number of files gathered.
    """
    seen: dict[str, Path] = {}
    for shard in map(Path, shard_dirs):
        if not shard.is_dir():
            raise FileNotFoundError(f"shard folder {shard} is missing; rerun the shard's rule")
        for mask in sorted(shard.glob(pattern)):
            if mask.name in seen:
                raise ValueError(f"{mask.name} is in both {seen[mask.name].parent} and {shard}")
            seen[mask.name] = mask
    with atomic_directory(out_dir) as tmp:
        for name, src in seen.items():
            try:
                os.link(src, tmp / name)
            except OSError:
                shutil.copy2(src, tmp / name)
    return len(seen)
