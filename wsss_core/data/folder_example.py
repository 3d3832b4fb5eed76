"""A small folder of "your own data" for the README's worked example (``data.source: folder``).

Images are drawn by the synthetic generator, then resized to a different width and height each
and saved in turn as PNG, JPEG and BMP; masks follow the images (nearest neighbour), palette
PNGs for train and greyscale PNGs for val (``masks``: for all splits, train only or none).
``train.csv`` has one 0/1 column per class (in reverse order: any order is read), ``val.csv``
one ``labels`` column of class names: both formats a folder may use (``wsss_core.data.folder``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from wsss_core.data.folder import LABELS_COLUMN
from wsss_core.data.palette import IGNORE_INDEX, save_mask
from wsss_core.data.synthetic import class_names, render_image
from wsss_core.io import write_text

FORMATS = (("png", "PNG"), ("jpg", "JPEG"), ("bmp", "BMP"))
MASKS = ("all", "train", "none")


def example_size(rng: np.random.Generator, base: int) -> tuple[int, int]:
    """(height, width) of one example image: each side 75% to 125% of ``base``."""
    low, high = int(0.75 * base), int(1.25 * base)
    return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))


def present_classes(mask: np.ndarray, num_classes: int) -> list[int]:
    """Class indices 0..K-1 whose label (1..K) appears in ``mask``."""
    values = np.unique(mask)
    return [int(v) - 1 for v in values if 1 <= v <= num_classes and v != IGNORE_INDEX]


def write_example_folder(
    out: str | os.PathLike,
    num_train: int = 60,
    num_val: int = 20,
    num_classes: int = 3,
    image_size: int = 80,
    masks: str = "all",
    seed: int = 0,
) -> None:
    """Write the example folder at ``out``: classes.txt, images/, masks/ (of the splits that
    ``masks`` names: all, train or none), train.csv, val.csv."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one image per split, got {num_train} and {num_val}")
    if masks not in MASKS:
        raise ValueError(f"masks must be one of {MASKS}, got {masks!r}")
    out = Path(out)
    names = class_names(num_classes)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[str, list[int]]]] = {"train": [], "val": []}
    (out / "images").mkdir(parents=True, exist_ok=True)
    for index in range(num_train + num_val):
        split = "train" if index < num_train else "val"
        image, mask = render_image(seed, index, num_classes, image_size)
        height, width = example_size(rng, image_size)
        image = Image.fromarray(image).resize((width, height), Image.BILINEAR)
        mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
        suffix, fmt = FORMATS[index % len(FORMATS)]
        image_id = f"{split}_{index:04d}"
        image.save(out / "images" / f"{image_id}.{suffix}", format=fmt)
        if split == "train" and masks != "none":
            save_mask(out / "masks" / f"{image_id}.png", mask)
        elif split == "val" and masks == "all":
            Image.fromarray(mask, mode="L").save(out / "masks" / f"{image_id}.png")
        rows[split].append((image_id, present_classes(mask, num_classes)))
    write_text(out / "classes.txt", "\n".join(names) + "\n")
    columns = list(reversed(names))
    train = pd.DataFrame(
        [[i, *(int(names.index(c) in present) for c in columns)] for i, present in rows["train"]],
        columns=["image", *columns],
    )
    write_text(out / "train.csv", train.to_csv(index=False))
    val = pd.DataFrame(
        [[i, " ".join(names[k] for k in present)] for i, present in rows["val"]],
        columns=["image", LABELS_COLUMN],
    )
    write_text(out / "val.csv", val.to_csv(index=False))
