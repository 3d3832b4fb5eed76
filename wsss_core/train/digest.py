"""Content digests of what a network is trained on, for the resume check.

A checkpoint resumes a run only when the digest of its input files is unchanged: new
labels, seeds, pseudo masks, images or upstream weights (a rerun of an upstream rule)
start training afresh instead of continuing with stale weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wsss_core.data.layout import image_path, mask_path

log = logging.getLogger(__name__)

CHUNK = 1 << 20

InputFiles = Mapping[str, Iterable[str | os.PathLike]]


def plain(value: Any) -> Any:
    """A JSON copy of ``value`` (dicts, lists, numbers, strings; other objects as strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def digest_files(groups: InputFiles) -> str:
    """BLAKE2b over every group's name and, in sorted path order, each file's name, size
    and bytes. Moving the files elsewhere keeps the digest; changing one byte changes it."""
    digest = hashlib.blake2b(digest_size=16)
    started, count, size = time.perf_counter(), 0, 0
    for group in sorted(groups):
        digest.update(f"[{group}]\0".encode())
        for path in sorted(Path(p) for p in groups[group]):
            size += _add_file(digest, path)
            count += 1
    log.info(
        "digest of %d input files (%.1f MiB) in %.2f s",
        count, size / 2**20, time.perf_counter() - started,
    )  # fmt: skip
    return digest.hexdigest()


def _add_file(digest: Any, path: Path) -> int:
    """Feed ``path``'s name, size and bytes to ``digest``; return its size."""
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return size


def dataset_files(
    root: str | os.PathLike,
    ids: Sequence[str],
    *,
    masks: bool = False,
    mask_dir: str | os.PathLike | None = None,
) -> dict[str, list[Path]]:
    """The image files of ``ids`` in a dataset in VOC layout and, with ``masks``, their
    masks (``<mask_dir>/<id>.png``, else the ground truth)."""
    files = {"images": [image_path(root, i) for i in ids]}
    if masks:
        files["masks"] = [mask_path(root, i, mask_dir) for i in ids]
    return files
