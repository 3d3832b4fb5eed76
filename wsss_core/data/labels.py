"""Image-level label tables: which foreground classes each image of a split holds.

A table is a CSV with column ``image_id`` then one 0/1 column per class name (label
order 1..K). Labels come from the segmentation masks (class c present when label c+1
appears; background 0 and ignore 255 do not count), from VOC XML annotations, or from the
table a prepared folder of the user's carries (``wsss_core.data.folder``, source ``table``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from wsss_core.data.folder import table_path
from wsss_core.data.layout import image_path, mask_path, read_class_names, read_split
from wsss_core.data.palette import IGNORE_INDEX, load_mask
from wsss_core.io import atomic_path

SOURCES = ("masks", "xml", "table")


def labels_from_mask(
    mask: np.ndarray, num_classes: int, source: str | os.PathLike | None = None
) -> np.ndarray:
    """Presence vector bool [K]: class c is present when label c+1 appears in ``mask``.

    A label other than 0..K and 255 raises ValueError naming it (and ``source``, the file).
    """
    values = np.unique(np.asarray(mask))
    unknown = values[(values > num_classes) & (values != IGNORE_INDEX)]
    if unknown.size or (values < 0).any():
        bad = unknown.tolist() + values[values < 0].tolist()
        where = f"mask {source}: " if source is not None else ""
        raise ValueError(
            f"{where}label value(s) {bad} are not a class (0..{num_classes}) nor ignore "
            f"({IGNORE_INDEX}); fix or re-create the mask, or check classes.txt"
        )
    present = np.zeros(num_classes, dtype=bool)
    classes = values[(values >= 1) & (values <= num_classes)]
    present[classes.astype(np.int64) - 1] = True
    return present


def labels_from_voc_xml(xml_path: str | os.PathLike, class_names: Sequence[str]) -> np.ndarray:
    """Presence vector bool [K] from a VOC ``Annotations/<id>.xml`` (every ``object/name``).

    Objects marked difficult or truncated count: they are in the image.
    """
    index = {name: i for i, name in enumerate(class_names)}
    try:
        tree = ET.parse(xml_path)
    except (OSError, ET.ParseError) as err:
        raise ValueError(
            f"cannot read annotation {xml_path} ({err}); re-run the data rule"
        ) from err
    present = np.zeros(len(class_names), dtype=bool)
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise ValueError(
                f"annotation {xml_path}: object name '{name}' is not one of the classes "
                f"{list(class_names)}"
            )
        present[index[name]] = True
    return present


def _missing_mask_fix(root: Path, split: str, path: Path) -> str:
    """What to do about a missing mask: the dataset was made by a rule (make_synthetic,
    prepare_voc) or given ready (data.voc2012.prepared: true), which no rule rebuilds."""
    rebuild = (
        "a dataset the workflow made is rebuilt with snakemake --forcerun make_synthetic "
        "(or prepare_voc)"
    )
    if split == "train_aug" and not (root / "SegmentationClassAug").is_dir():
        return (
            f"{root / 'SegmentationClassAug'} (the masks of train_aug) is missing: for a tree "
            "given with data.voc2012.prepared: true, build it with workflow_scripts/"
            "prepare_voc.py from the VOC and SBD archives or copy it there, or set prepared: "
            f"false to download and prepare the tree; {rebuild}"
        )
    if not path.parent.is_dir():
        return (
            f"the folder {path.parent} is missing: for a tree given with data.voc2012.prepared: "
            f"true, copy {path.parent.name}/ there from VOCtrainval_11-May-2012.tar (or set "
            f"prepared: false to download and prepare the tree); {rebuild}"
        )
    return (
        f"add the mask, or remove '{path.stem}' from the split list of '{split}'; {rebuild} "
        "(or use a split whose images all have masks)"
    )


def build_label_table(
    root: str | os.PathLike,
    split: str,
    source: str = "masks",
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Label table of a split: ``image_id`` + one 0/1 int column per class of ``classes.txt``.

    ``source`` is ``masks`` (``SegmentationClass/<id>.png``), ``xml``
    (``Annotations/<id>.xml``) or ``table`` (``labels/<split>.csv`` of a prepared folder).
    Every listed id must have its image and its source file. ``progress`` is called with 1
    after each image.
    """
    if source not in SOURCES:
        raise ValueError(f"label source must be one of {SOURCES}, got '{source}'")
    root = Path(root)
    ids = read_split(root, split)
    names = read_class_names(root)
    if source == "table":
        return _prepared_table(root, split, ids, names)
    rows = np.zeros((len(ids), len(names)), dtype=np.int64)
    for i, image_id in enumerate(ids):
        image = image_path(root, image_id)
        if not image.is_file():
            raise FileNotFoundError(
                f"split '{split}' lists {image_id} but image {image} is missing; "
                "re-run the data rule"
            )
        if source == "masks":
            path = mask_path(root, image_id)
            if not path.is_file():
                raise FileNotFoundError(
                    f"split '{split}' lists {image_id} but mask {path} is missing; "
                    f"{_missing_mask_fix(root, split, path)}"
                )
            rows[i] = labels_from_mask(load_mask(path), len(names), source=path)
        else:
            path = root / "Annotations" / f"{image_id}.xml"
            if not path.is_file():
                raise FileNotFoundError(
                    f"split '{split}' lists {image_id} but annotation {path} is missing; "
                    "re-run the data rule (or use label source 'masks')"
                )
            rows[i] = labels_from_voc_xml(path, names)
        if progress is not None:
            progress(1)
    table = pd.DataFrame(rows, columns=names)
    table.insert(0, "image_id", ids)
    return table


def _prepared_table(root: Path, split: str, ids: list[str], names: list[str]) -> pd.DataFrame:
    """The label table of a prepared folder, checked against the split list and classes.txt."""
    path = table_path(root, split)
    table_ids, table_names, labels = read_label_table(path)
    if table_names != names or table_ids != ids:
        raise ValueError(
            f"label table {path} does not match {root / 'classes.txt'} and the split list of "
            f"'{split}'; re-run prepare_folder (snakemake --forcerun prepare_folder)"
        )
    table = pd.DataFrame(labels.astype(np.int64), columns=names)
    table.insert(0, "image_id", ids)
    return table


def _check_table(df: pd.DataFrame, where: str) -> list[str]:
    """Validate a label table; return its class names."""
    if df.columns.empty or df.columns[0] != "image_id":
        raise ValueError(f"{where}: the first column must be 'image_id', got {list(df.columns)}")
    names = [str(c) for c in df.columns[1:]]
    if not names:
        raise ValueError(f"{where}: no class columns after 'image_id'")
    if df.empty:
        raise ValueError(f"{where}: the table has no rows")
    ids = df["image_id"]
    blank = ids.isna() | (ids.astype(str).str.strip() == "")
    if blank.any():
        raise ValueError(f"{where}: empty image_id in row(s) {np.flatnonzero(blank)[:5].tolist()}")
    duplicated = ids[ids.duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{where}: image_id listed more than once: {duplicated[:5]}")
    values = df[names]
    numeric = values.apply(pd.to_numeric, errors="coerce")
    bad = ~numeric.isin([0, 1])
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        value = values.iloc[row, col]
        value = value.item() if isinstance(value, np.generic) else value
        raise ValueError(
            f"{where}: label values must be 0 or 1; image {ids.iloc[row]} has "
            f"{value!r} for class '{names[col]}'. Re-run make_labels"
        )
    return names


def write_label_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a label table as CSV, atomically (after checking it)."""
    _check_table(df, f"label table for {path}")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_label_table(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Read a label table: (image ids, class names, labels float32 [N, K] of 0/1)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label table {path} not found; run make_labels to create it")
    try:
        df = pd.read_csv(path, dtype={"image_id": str}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot parse label table {path} ({err}); re-run make_labels") from err
    names = _check_table(df, f"label table {path}")
    labels = df[names].apply(pd.to_numeric).to_numpy(dtype=np.float32)
    return df["image_id"].astype(str).tolist(), names, labels
