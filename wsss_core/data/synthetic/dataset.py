"""The synthetic dataset on disk: one family per style, PASCAL VOC 2012 layout, JPEG images.

Every image is drawn from its own generator ``numpy.random.default_rng([seed, index])``, so
any image can be regenerated alone and the same arguments give byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.data.palette import save_mask
from wsss_core.data.synthetic import scenes, shapes
from wsss_core.data.synthetic.compose import Array
from wsss_core.io import atomic_path, write_text

MIN_IMAGE_SIZE = 32
MAX_IMAGE_TRIES = 25


@dataclass(frozen=True)
class Family:
    """A style of synthetic images: its class names (label order 1..K) and its composer.

    ``compose(rng, num_classes, size)`` draws one candidate (image, mask), or None when a
    labelled object ends up too small (the candidate is then redrawn from the same stream).
    """

    classes: tuple[str, ...]
    compose: Callable[[np.random.Generator, int, int], tuple[Array, Array] | None]


FAMILIES: dict[str, Family] = {
    "shapes": Family(tuple(shapes.SHAPES), shapes.compose),
    "scenes": Family(tuple(scenes.SILHOUETTES), scenes.compose),
}
STYLES = tuple(FAMILIES)
DEFAULT_STYLE = "shapes"


def _family(style: str) -> Family:
    if style not in FAMILIES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got '{style}'")
    return FAMILIES[style]


def max_classes(style: str = DEFAULT_STYLE) -> int:
    """How many classes the family ``style`` has."""
    return len(_family(style).classes)


def _check_classes(num_classes: int, style: str) -> None:
    classes = _family(style).classes
    if not 1 <= num_classes <= len(classes):
        raise ValueError(
            f"num_classes must be between 1 and {len(classes)} (the synthetic {style} "
            f"classes: {', '.join(classes)}), got {num_classes}"
        )


def render_image(
    seed: int, index: int, num_classes: int, image_size: int, style: str = DEFAULT_STYLE
) -> tuple[Array, Array]:
    """Draw image ``index`` of the dataset with ``seed``: (RGB uint8 [S,S,3], mask uint8 [S,S]).

    The image is drawn from ``default_rng([seed, index])`` alone. Candidates where a
    labelled object would keep too few unambiguous pixels are redrawn from the same stream.
    """
    _check_classes(num_classes, style)
    compose = FAMILIES[style].compose
    rng = np.random.default_rng([seed, index])
    for _ in range(MAX_IMAGE_TRIES):
        drawn = compose(rng, num_classes, image_size)
        if drawn is not None:
            return drawn
    raise RuntimeError(
        f"could not draw synthetic image {index} (seed {seed}) with a visible object in "
        f"{MAX_IMAGE_TRIES} tries; use a larger image_size"
    )


def class_names(num_classes: int, style: str = DEFAULT_STYLE) -> list[str]:
    """Names of the first ``num_classes`` classes of the family ``style``, in label order 1..K."""
    _check_classes(num_classes, style)
    return list(FAMILIES[style].classes[:num_classes])


def image_id(index: int) -> str:
    """The image id of dataset index ``index`` (train first, then val)."""
    return f"syn_{index:06d}"


def check_args(
    num_classes: int,
    image_size: int,
    num_train: int,
    num_val: int,
    jpeg_quality: int = 90,
    seed: int = 0,
    style: str = DEFAULT_STYLE,
) -> None:
    """Raise ValueError, saying what is wrong, for arguments generate_dataset cannot use."""
    _check_classes(num_classes, style)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1 (a split cannot be empty), got {value}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be between 1 and 100, got {jpeg_quality}")


def save_jpeg(path: str | os.PathLike, image: Array, quality: int) -> None:
    """Write an RGB uint8 image as JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(image, mode="RGB").save(tmp, format="JPEG", quality=quality)


def generate_dataset(
    root: str | os.PathLike,
    num_classes: int,
    image_size: int,
    num_train: int,
    num_val: int,
    seed: int,
    jpeg_quality: int = 90,
    progress: Callable[[int], None] | None = None,
    style: str = DEFAULT_STYLE,
) -> None:
    """Write the synthetic dataset of family ``style`` in PASCAL VOC 2012 layout under ``root``.

    ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG, 0 background,
    1..K classes, 255 ignore band), ``ImageSets/Segmentation/{train,val}.txt`` and
    ``classes.txt``. Ids ``syn_000000``... run through train then val. ``progress`` is
    called with 1 after each image (for a progress bar).
    """
    check_args(num_classes, image_size, num_train, num_val, jpeg_quality, seed, style)
    root = Path(root)
    ids = [image_id(i) for i in range(num_train + num_val)]
    for index, name in enumerate(ids):
        image, mask = render_image(seed, index, num_classes, image_size, style)
        save_jpeg(root / "JPEGImages" / f"{name}.jpg", image, jpeg_quality)
        save_mask(root / "SegmentationClass" / f"{name}.png", mask)
        if progress is not None:
            progress(1)
    splits = root / "ImageSets" / "Segmentation"
    write_text(splits / "train.txt", "\n".join(ids[:num_train]) + "\n")
    write_text(splits / "val.txt", "\n".join(ids[num_train:]) + "\n")
    write_text(root / "classes.txt", "\n".join(class_names(num_classes, style)) + "\n")
