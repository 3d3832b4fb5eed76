"""A folder of the user's own images, checked and prepared into the dataset layout.

The folder (config key ``data.folder.path``) holds::

    classes.txt      the class names, one per line, in label order 1..K (background is 0)
    images/          <id>.<ext>: any format PIL reads, any size
    masks/           optional: <id>.png, palette or greyscale, 0 background, k class k,
                     255 ignore; a split has a mask for every image or for none
    <split>.csv      one label table per split (data.train_split, data.eval_split): a first
                     column of image ids, then either one 0/1 column per class (named as in
                     classes.txt, any order) or one column ``labels`` of the image's class
                     names separated by spaces (empty: background only)

``prepare_folder`` writes the layout of ``wsss_core.data.layout``: JPEG images are copied
byte for byte, any other image (or a JPEG that its EXIF turns upright) is written as a
lossless PNG as viewers show it; masks are checked (labels 0..K or 255, the image's size) and
written as palette PNGs; the label tables go to ``labels/<split>.csv`` (read by
``wsss_core.data.labels`` with source ``table``); splits without masks are listed in
``splits_without_masks.txt``. Every problem is a ``UserError`` naming the file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from wsss_core.cli import UserError
from wsss_core.data.image_files import ORIENTATION_TAG, image_suffixes, read_image
from wsss_core.data.layout import SPLITS_WITHOUT_MASKS, read_class_names
from wsss_core.data.palette import IGNORE_INDEX, save_mask
from wsss_core.io import atomic_directory, write_text

LABELS_COLUMN = "labels"


def table_path(root: str | os.PathLike, split: str) -> Path:
    """The label table of ``split`` in a prepared tree."""
    return Path(root) / "labels" / f"{split}.csv"


def read_folder_classes(folder: Path) -> list[str]:
    """The class names of ``<folder>/classes.txt`` (one-line errors naming the file)."""
    path = folder / "classes.txt"
    if not path.is_file():
        raise UserError(
            f"{path} not found: write the class names there, one per line in label order "
            "(background is label 0 and is not listed)"
        )
    try:
        return read_class_names(folder)
    except ValueError as err:
        raise UserError(str(err)) from None


def parse_label_table(path: Path, class_names: Sequence[str]) -> pd.DataFrame:
    """A user's label table as ``image_id`` + one 0/1 int column per class, in the order of
    ``class_names``. Either format (0/1 columns, or a ``labels`` column of names)."""
    if not path.is_file():
        raise UserError(
            f"label table {path} not found: write one row per image of the split (image id, "
            "then a 0/1 column per class or a 'labels' column of class names)"
        )
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        cause = " ".join(str(err).split())
        raise UserError(f"cannot parse label table {path} ({cause}); write it as CSV") from None
    if df.shape[1] < 2 or df.empty:
        raise UserError(
            f"label table {path} needs a header, an id column and class columns (or a "
            f"'{LABELS_COLUMN}' column) and at least one row; it has columns {list(df.columns)} "
            f"and {len(df)} rows"
        )
    ids = df.iloc[:, 0].str.strip()
    blank = np.flatnonzero((ids == "").to_numpy())
    if blank.size:
        raise UserError(f"label table {path}: empty image id in data row {blank[0] + 1}")
    duplicated = ids[ids.duplicated()].tolist()
    if duplicated:
        raise UserError(f"label table {path}: image id '{duplicated[0]}' is listed twice")
    columns = [str(c).strip() for c in df.columns[1:]]
    labels = np.zeros((len(df), len(class_names)), dtype=np.int64)
    index = {name: k for k, name in enumerate(class_names)}
    if columns == [LABELS_COLUMN] and LABELS_COLUMN not in index:
        for row, (image_id, cell) in enumerate(zip(ids, df.iloc[:, 1], strict=True)):
            for name in cell.split():
                if name not in index:
                    raise UserError(
                        f"label table {path}: image '{image_id}' names class '{name}', which is "
                        f"not in classes.txt ({', '.join(class_names)})"
                    )
                labels[row, index[name]] = 1
    else:
        unknown = [c for c in columns if c not in index]
        missing = [c for c in class_names if c not in columns]
        if unknown or missing or len(set(columns)) != len(columns):
            raise UserError(
                f"label table {path}: the class columns {columns} must be the classes of "
                f"classes.txt ({', '.join(class_names)}), each once"
                + (f"; unknown: {unknown}" if unknown else "")
                + (f"; missing: {missing}" if missing else "")
                + f" (or give one column '{LABELS_COLUMN}' of class names)"
            )
        for column_index, name in enumerate(columns, start=1):
            cells = df.iloc[:, column_index].str.strip()
            bad = np.flatnonzero(~cells.isin(["0", "1"]).to_numpy())
            if bad.size:
                raise UserError(
                    f"label table {path}: image '{ids.iloc[bad[0]]}' has {cells.iloc[bad[0]]!r} "
                    f"for class '{name}'; write 0 or 1"
                )
            labels[:, index[name]] = cells.astype(int).to_numpy()
    table = pd.DataFrame(labels, columns=list(class_names))
    table.insert(0, "image_id", ids.tolist())
    return table


def index_images(images_dir: Path) -> dict[str, Path]:
    """{file name and stem: path} of the image files in ``images_dir`` (hidden files left
    out); two files with one stem are an error."""
    if not images_dir.is_dir():
        raise UserError(f"image folder {images_dir} not found: put the images there as <id>.<ext>")
    suffixes = image_suffixes()
    found: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in suffixes:
            continue
        other = found.get(path.stem)
        if other is not None:
            raise UserError(
                f"images {other} and {path} have the same id '{path.stem}'; rename or remove one"
            )
        found[path.stem] = path
    return found


def find_image(images: dict[str, Path], image_id: str, table: Path, folder: Path) -> Path:
    """The image of ``image_id`` (an id is a file's stem, or its name)."""
    path = images.get(image_id)
    if path is None:
        stem = Path(image_id).stem
        if stem in images and images[stem].name == image_id:
            path = images[stem]
    if path is None:
        raise UserError(
            f"label table {table} lists image '{image_id}' but {folder / 'images'} has no "
            f"{image_id}.<ext>; add the image or remove its row"
        )
    return path


def _is_upright_jpeg(path: Path) -> bool:
    """A JPEG file whose pixels need no EXIF turn (it can be copied as it is)."""
    try:
        with Image.open(path) as image:
            return image.format == "JPEG" and image.getexif().get(ORIENTATION_TAG, 1) == 1
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False  # read_image names the problem


def write_image(source: Path, dest_dir: Path, image_id: str) -> tuple[int, int]:
    """Copy (JPEG) or convert (PNG) one image into ``dest_dir``; its (height, width)."""
    pixels = read_image(source)  # checks that PIL reads it, whatever the path
    if _is_upright_jpeg(source):
        shutil.copyfile(source, dest_dir / f"{image_id}.jpg")
    else:
        Image.fromarray(pixels, mode="RGB").save(dest_dir / f"{image_id}.png")
    return pixels.shape[0], pixels.shape[1]


def read_user_mask(path: Path, num_classes: int, size: tuple[int, int]) -> np.ndarray:
    """A user's mask as uint8 [H, W] labels, checked: palette or greyscale, labels 0..K or 255,
    the image's (height, width)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            mask = np.array(image) if mode in ("P", "L") else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        cause = " ".join(str(err).split())
        raise UserError(f"cannot read mask {path} ({cause}); replace it") from None
    if mask is None:
        raise UserError(
            f"mask {path} is a {mode} image; masks are palette or greyscale PNGs whose values "
            "are labels (0 background, k class k, 255 ignore)"
        )
    values = np.unique(mask)
    bad = values[(values > num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise UserError(
            f"mask {path} holds label(s) {bad.tolist()[:5]}, but classes.txt has {num_classes} "
            f"classes (labels 0..{num_classes}, 255 ignore); fix the mask or classes.txt"
        )
    if mask.shape != size:
        raise UserError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is {size[1]}x"
            f"{size[0]}; masks must have their image's size"
        )
    return mask.astype(np.uint8)


@dataclass(frozen=True)
class PreparedSplit:
    """What ``prepare_folder`` made of one split."""

    name: str
    images: int
    has_masks: bool


def split_masks(masks_dir: Path, split: str, ids: Sequence[str]) -> bool:
    """Whether every image of the split has a mask (True) or none has (False); some are an
    error naming the first missing ones."""
    have = [masks_dir.is_dir() and (masks_dir / f"{i}.png").is_file() for i in ids]
    if all(have):
        return True
    if not any(have):
        return False
    missing = [i for i, ok in zip(ids, have, strict=True) if not ok]
    raise UserError(
        f"{masks_dir} holds masks for {sum(have)} of the {len(ids)} images of split '{split}', "
        f"not for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: add them as "
        "<id>.png, or remove the split's masks to run it without ground truth"
    )


def prepare_folder(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    splits: Sequence[str],
    progress: Callable[[int], None] | None = None,
) -> list[PreparedSplit]:
    """Check the user's ``folder`` and write its dataset tree at ``out`` (atomically).

    Every table, image and mask is checked before ``out`` appears. ``progress`` is called
    with 1 after each image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"dataset folder {folder} not found; check config key data.folder.path")
    names = read_folder_classes(folder)
    images = index_images(folder / "images")
    masks_dir = folder / "masks"
    tables = {}
    for split in dict.fromkeys(splits):
        path = folder / f"{split}.csv"
        table = parse_label_table(path, names)
        stems = [find_image(images, i, path, folder).stem for i in table["image_id"]]
        twice = pd.Series(stems)[pd.Series(stems).duplicated()].tolist()
        if twice:
            raise UserError(f"label table {path} lists image '{twice[0]}' twice (by two names)")
        tables[split] = table.assign(image_id=stems)
    prepared: list[PreparedSplit] = []
    with atomic_directory(out) as tmp:
        (tmp / "JPEGImages").mkdir()
        sizes: dict[str, tuple[int, int]] = {}
        for split, table in tables.items():
            ids = table["image_id"].tolist()
            has_masks = split_masks(masks_dir, split, ids)
            for image_id in ids:
                if image_id not in sizes:
                    source = images[image_id]
                    sizes[image_id] = write_image(source, tmp / "JPEGImages", image_id)
                    if progress is not None:
                        progress(1)
                if has_masks:
                    path = masks_dir / f"{image_id}.png"
                    mask = read_user_mask(path, len(names), sizes[image_id])
                    save_mask(tmp / "SegmentationClass" / f"{image_id}.png", mask)
            write_text(tmp / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(ids) + "\n")
            write_text(table_path(tmp, split), table.to_csv(index=False))
            prepared.append(PreparedSplit(split, len(ids), has_masks))
        write_text(tmp / "classes.txt", "\n".join(names) + "\n")
        without = [p.name for p in prepared if not p.has_masks]
        write_text(tmp / SPLITS_WITHOUT_MASKS, "".join(f"{name}\n" for name in without))
    return prepared
