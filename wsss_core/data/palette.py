"""PASCAL VOC label masks: the colour palette and palette-PNG input/output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.io import atomic_path

IGNORE_INDEX = 255


def voc_palette() -> list[int]:
    """The 256-entry PASCAL VOC palette as a flat [r, g, b, ...] list (bit-interleaved)."""
    palette: list[int] = []
    for label in range(256):
        r = g = b = 0
        c = label
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.extend((r, g, b))
    return palette


VOC_PALETTE = voc_palette()


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a [H, W] uint8 label mask as a palette PNG, atomically."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape} for {path}")
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(VOC_PALETTE)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a palette (or grey) PNG label mask as a [H, W] uint8 array of label indices."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(
                    f"{path}: label masks must be palette or greyscale PNGs, got mode {image.mode}"
                )
            return np.array(image, dtype=np.uint8)
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot read mask {path}: {err}; re-create or re-download it") from err


def colorize(mask: np.ndarray) -> np.ndarray:
    """Map a label mask to RGB with the VOC palette, for figures."""
    table = np.array(VOC_PALETTE, dtype=np.uint8).reshape(256, 3)
    return table[mask]
