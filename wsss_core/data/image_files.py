"""Image files given on a command line: found in files and folders, checked, read, batched.

Any format PIL reads, any size and mode: an image is read as RGB uint8 [H, W, 3] the way
image viewers show it (the EXIF orientation of camera photos applied). A folder stands for
the image files directly in it (by the extensions PIL knows, hidden files left out). Every
problem (a missing path, no images, an unreadable file, two inputs that would write the same
output names) is a ``UserError`` naming the path and saying what to do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from wsss_core.cli import UserError

ORIENTATION_TAG = 0x0112  # EXIF orientation; 5..8 turn the image by 90 degrees
ROTATED = (5, 6, 7, 8)


def image_suffixes() -> set[str]:
    """The file name extensions of every format PIL reads (lower case, with the dot)."""
    Image.init()
    return {suffix.lower() for suffix, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN}  # fmt: skip


def _unreadable(path: Path, err: BaseException) -> UserError:
    cause = " ".join(str(err).split()) or type(err).__name__
    return UserError(
        f"cannot read image {path} ({cause}); it is not an image PIL reads or it is damaged: "
        "convert or replace it, or leave it out"
    )


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the image as read by ``read_image``, from the file's header."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(ORIENTATION_TAG) in ROTATED:
                width, height = height, width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise _unreadable(path, err) from err
    return int(height), int(width)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image as RGB uint8 [H, W, 3] (EXIF orientation applied; first frame)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return np.array(upright.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise _unreadable(path, err) from err


def find_images(
    inputs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None
) -> list[Path]:
    """The image files of ``inputs``: each a file (taken whatever its extension) or a folder
    (its image files, sorted by name; files under ``exclude``, the output folder, left out).
    A file named twice is taken once."""
    if not inputs:
        raise UserError("no images given; name image files or folders that hold them")
    suffixes = image_suffixes()
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    empty: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(
                p for p in item.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
                and (skip is None or p.resolve().parent != skip)
            )  # fmt: skip
            if not files:
                empty.append(item)
            found += files
        elif item.is_file():
            found.append(item)
        else:
            raise UserError(f"image or folder {item} does not exist; check the path")
    if not found:
        raise UserError(
            f"no images found in {', '.join(map(str, empty))} (looked for files ending in "
            f"{', '.join(sorted(suffixes & {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.webp'}))}"
            ", ...); name image files or folders that hold them"
        )
    unique, seen = [], set()
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def output_stems(paths: Sequence[Path]) -> list[str]:
    """The file stem of every path, which names its outputs; two images with the same stem
    (``a/x.jpg`` and ``b/x.png``) would overwrite each other's outputs: an error."""
    owner: dict[str, Path] = {}
    for path in paths:
        other = owner.setdefault(path.stem, path)
        if other != path:
            raise UserError(
                f"images {other} and {path} have the same name stem '{path.stem}', so their "
                "outputs would overwrite each other; rename one or run them separately"
            )
    return [path.stem for path in paths]


@dataclass(frozen=True)
class ImageFiles:
    """Images to process: their paths, output stems and sizes (height, width)."""

    paths: list[Path]
    stems: list[str]
    sizes: list[tuple[int, int]]

    @classmethod
    def collect(
        cls, inputs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None
    ) -> ImageFiles:
        """``find_images``, then every file's header read (an unreadable file stops here,
        before any computation) and its output stem checked."""
        paths = find_images(inputs, exclude)
        stems = output_stems(paths)
        return cls(paths, stems, [image_size(path) for path in paths])

    def __len__(self) -> int:
        return len(self.paths)


def batches_by_size(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices of ``sizes`` in batches of at most ``batch_size`` images of one size: images
    of each size in their order, the sizes in the order they first appear."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(index)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]
