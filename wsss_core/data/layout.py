"""The dataset layout (PASCAL VOC 2012's): split lists, class names, image and mask files.

The same layout serves the real VOC 2012 tree, the synthetic dataset and a prepared folder
of the user's images (``wsss_core.data.folder``): ``JPEGImages/<id>.jpg`` (or ``<id>.png``),
``SegmentationClass/<id>.png`` (or ``SegmentationClassAug``),
``ImageSets/Segmentation/<split>.txt`` and ``classes.txt``. A split listed in
``splits_without_masks.txt`` has no ground truth: its stages run, its scores say so. Missing or
corrupt files and unknown mask labels are errors that name the file and say what to do.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.data.palette import IGNORE_INDEX, load_mask
from wsss_core.data.voc import VOC_CLASSES


def split_path(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


# the file at a tree's root that lists its splits without ground-truth masks, one per line
SPLITS_WITHOUT_MASKS = "splits_without_masks.txt"


def image_path(root: str | os.PathLike, image_id: str) -> Path:
    """``JPEGImages/<id>.jpg``, or ``<id>.png`` where only that exists (a prepared folder keeps
    images that are no JPEG lossless)."""
    jpeg = Path(root) / "JPEGImages" / f"{image_id}.jpg"
    if not jpeg.is_file():
        png = jpeg.with_suffix(".png")
        if png.is_file():
            return png
    return jpeg


def mask_path(
    root: str | os.PathLike, image_id: str, mask_dir: str | os.PathLike | None = None
) -> Path:
    """Ground-truth mask path, or ``<mask_dir>/<id>.png`` when a mask directory is given.

    On a prepared VOC 2012 tree, ``SegmentationClassAug`` (VOC's own masks plus the SBD
    masks of train_aug) is preferred to ``SegmentationClass`` when it holds the id.
    """
    if mask_dir is not None:
        return Path(mask_dir) / f"{image_id}.png"
    augmented = Path(root) / "SegmentationClassAug" / f"{image_id}.png"
    if augmented.is_file():
        return augmented
    return Path(root) / "SegmentationClass" / f"{image_id}.png"


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Image ids of a split, one per line of ``ImageSets/Segmentation/<split>.txt``."""
    path = split_path(root, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"split file {path} not found: check the split name '{split}' and the dataset root, "
            "or re-run the data rule"
        )
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"split file {path} lists no images; re-run the data rule")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"split file {path} lists ids more than once: {duplicates[:5]}")
    return ids


def sample_ids(ids: list[str] | tuple[str, ...], count: int) -> list[str]:
    """A fixed sample of ``count`` ids spread evenly over the list (first and last included);
    all of them when ``count`` is at least their number (the report's figures, the
    validation images of the AffinityNet and the segmenter)."""
    if count <= 0 or not ids:
        return []
    if count >= len(ids):
        return list(ids)
    positions = np.linspace(0, len(ids) - 1, count).round().astype(int)
    return [ids[p] for p in dict.fromkeys(positions.tolist())]


def validation_ids(root: str | os.PathLike, split: str | None, count: int) -> list[str]:
    """``count`` ids of ``split`` spread evenly (``sample_ids``), on which a network is scored
    against the ground truth after every epoch; none without a split, for ``count`` 0 or when
    the split has no masks (``split_has_masks``)."""
    if split is None or count <= 0 or not split_has_masks(root, split):
        return []
    return sample_ids(read_split(root, split), count)


def split_has_masks(root: str | os.PathLike, split: str) -> bool:
    """False when the tree lists ``split`` in ``splits_without_masks.txt`` (its images have no
    ground truth, so no stage can be scored on them); True otherwise."""
    path = Path(root) / SPLITS_WITHOUT_MASKS
    if not path.is_file():
        return True
    return split not in {line.strip() for line in path.read_text().splitlines()}


def is_voc2012_tree(root: str | os.PathLike) -> bool:
    """True for a PASCAL VOC 2012 tree (JPEGImages, ImageSets and Annotations or masks)."""
    root = Path(root)
    return (
        (root / "JPEGImages").is_dir()
        and (root / "ImageSets").is_dir()
        and ((root / "Annotations").is_dir() or (root / "SegmentationClass").is_dir())
    )


def read_class_names(root: str | os.PathLike) -> list[str]:
    """Foreground class names in label order 1..K, from ``classes.txt``.

    A VOC 2012 tree without ``classes.txt`` has the 20 VOC classes.
    """
    path = Path(root) / "classes.txt"
    if not path.is_file():
        if is_voc2012_tree(root):
            return list(VOC_CLASSES)
        raise FileNotFoundError(
            f"{path} not found and {root} is not a VOC 2012 tree: write the class names there, "
            "one per line in label order, or re-run the data rule"
        )
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path} lists no class names; write one per line in label order")
    if len(set(names)) != len(names):
        raise ValueError(f"{path} lists a class name more than once: {names}")
    if "image_id" in names:
        raise ValueError(f"{path}: 'image_id' cannot be a class name")
    return names


def _fix_dataset_file(root: str | os.PathLike, image_id: str) -> str:
    """What to do about a missing or corrupt file of a dataset root, for error messages."""
    lists = Path(root) / "ImageSets" / "Segmentation"
    return (
        f"replace it (re-run the data rule for a dataset the workflow made), or remove "
        f"'{image_id}' from the split lists in {lists} and rerun"
    )


def load_image(root: str | os.PathLike, image_id: str) -> np.ndarray:
    """The RGB image of ``image_id`` as uint8 [H, W, 3].

    A missing or unreadable file (truncated, not an image) is an error that names it.
    """
    path = image_path(root, image_id)
    if not path.is_file():
        raise FileNotFoundError(
            f"image {path} not found; re-run the data rule, or remove '{image_id}' from the "
            f"split lists in {Path(root) / 'ImageSets' / 'Segmentation'}"
        )
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"cannot read image {path}: it is unreadable ({err}); "
            f"{_fix_dataset_file(root, image_id)}"
        ) from err


def check_mask_labels(mask: np.ndarray, num_classes: int, path: str | os.PathLike) -> np.ndarray:
    """``mask`` itself when every label is a class 0..num_classes-1 or 255 (ignore); else a
    ValueError naming the file ``path`` and the unknown labels."""
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise ValueError(
            f"mask {path} holds label(s) {bad.tolist()[:5]} that are neither a class "
            f"(0..{num_classes - 1}, background and the classes of classes.txt) nor ignore "
            f"({IGNORE_INDEX}); fix or replace the mask, or correct classes.txt"
        )
    return mask


def load_gt_mask(
    root: str | os.PathLike,
    image_id: str,
    mask_dir: str | os.PathLike | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """The label mask of ``image_id`` as uint8 [H, W] (ground truth, or from ``mask_dir``).

    With ``num_classes`` (C, background included) a label other than 0..C-1 and 255 is an
    error naming the file.
    """
    path = mask_path(root, image_id, mask_dir)
    if not path.is_file():
        if mask_dir is not None:
            raise FileNotFoundError(
                f"mask {path} not found; re-run the rule that writes {mask_dir}"
            )
        raise FileNotFoundError(f"mask {path} not found; {_fix_dataset_file(root, image_id)}")
    mask = load_mask(path)
    return mask if num_classes is None else check_mask_labels(mask, num_classes, path)
