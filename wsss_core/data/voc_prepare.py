"""Turn the extracted PASCAL VOC 2012 and SBD archives into the dataset root the workflow reads.

The VOC 2012 folder (``VOCdevkit/VOC2012`` of ``VOCtrainval_11-May-2012.tar``)
is the dataset root. ``prepare_voc`` adds to it, in place:

- ``classes.txt``: the 20 VOC class names in label order 1..20;
- ``SegmentationClassAug/<id>.png``: a palette-PNG mask for every id of
  ``train_aug``, VOC ``train`` and VOC ``val``. VOC's own masks are copied
  byte for byte where VOC has one (they take precedence, and keep their 255
  boundary band); the other ids get their SBD mask (``cls/<id>.mat``,
  ``GTcls.Segmentation``) converted. On the real data this is 12,031 masks;
- ``ImageSets/Segmentation/train_aug.txt``: (SBD train + SBD val + VOC train)
  minus VOC val, sorted; 10,582 ids on the real data. Without SBD it is VOC
  train alone (1,464 ids).

``mask_dir_for_split`` tells a stage where the masks of a split live:
``SegmentationClassAug`` for ``train_aug``, ``SegmentationClass`` otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from wsss_core.data.palette import IGNORE_INDEX, save_mask
from wsss_core.data.voc import VOC_CLASSES
from wsss_core.io import atomic_directory, write_text

log = logging.getLogger(__name__)

TRAIN_AUG = "train_aug"
AUG_MASK_DIR = "SegmentationClassAug"
VOC_MASK_DIR = "SegmentationClass"
SPLIT_DIR = Path("ImageSets") / "Segmentation"


@dataclass(frozen=True)
class PreparedVOC:
    """What ``prepare_voc`` wrote."""

    root: Path
    train_aug: list[str]
    n_voc_masks: int
    n_sbd_masks: int


def mask_dir_for_split(voc_root: str | os.PathLike, split: str) -> Path:
    """Folder holding the ground-truth masks of ``split`` (no existence check)."""
    name = AUG_MASK_DIR if split == TRAIN_AUG else VOC_MASK_DIR
    return Path(voc_root) / name


def read_split(path: str | os.PathLike) -> list[str]:
    """Image ids of a split file (one per line), in file order, without duplicates."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} is missing; check the dataset folder")
    ids = [line.strip() for line in path.read_text().splitlines()]
    return list(dict.fromkeys(i for i in ids if i))


def train_aug_ids(
    voc_train: Iterable[str],
    voc_val: Iterable[str],
    sbd_train: Iterable[str] = (),
    sbd_val: Iterable[str] = (),
) -> list[str]:
    """(SBD train + SBD val + VOC train) minus VOC val, sorted."""
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def sbd_mat_to_png(mat_path: str | os.PathLike, num_classes: int = 20) -> np.ndarray:
    """Read an SBD ``cls/<id>.mat`` file: its ``GTcls.Segmentation`` as a uint8 [H, W] mask."""
    mat_path = Path(mat_path)
    try:
        mat = scipy.io.loadmat(mat_path)
    except Exception as err:  # scipy raises many kinds (MatReadError, IndexError, ...)
        raise ValueError(f"cannot read SBD mask {mat_path}: {err}; extract SBD again") from err
    gt = mat.get("GTcls")
    if gt is None or gt.dtype.names is None or "Segmentation" not in gt.dtype.names:
        raise ValueError(
            f"{mat_path} has no GTcls.Segmentation; expected an SBD dataset/cls/*.mat file"
        )
    seg = np.asarray(gt["Segmentation"].flat[0])
    if seg.ndim != 2 or seg.size == 0:
        raise ValueError(f"{mat_path}: GTcls.Segmentation has shape {seg.shape}, expected [H, W]")
    labels = np.unique(seg)
    bad = labels[((labels > num_classes) & (labels != IGNORE_INDEX)) | (labels < 0)]
    if bad.size:
        raise ValueError(
            f"{mat_path}: labels {bad.tolist()} outside 0..{num_classes} (and {IGNORE_INDEX}); "
            "the file is not an SBD class mask"
        )
    return np.ascontiguousarray(seg, dtype=np.uint8)


def ensure_classes_file(voc_root: str | os.PathLike) -> Path:
    """Write ``classes.txt`` (the 20 VOC names) unless an identical one is there."""
    path = Path(voc_root) / "classes.txt"
    if path.exists():
        found = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if tuple(found) != VOC_CLASSES:
            raise ValueError(
                f"{path} lists {found}, not the 20 VOC classes in order; delete it so that "
                "prepare_voc writes the right one"
            )
        return path
    write_text(path, "\n".join(VOC_CLASSES) + "\n")
    return path


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing; {what}")


def _stems(folder: Path, suffix: str) -> set[str]:
    return {name[: -len(suffix)] for name in os.listdir(folder) if name.endswith(suffix)}


def prepare_voc(
    voc_root: str | os.PathLike,
    sbd_root: str | os.PathLike | None = None,
    *,
    progress: bool = True,
) -> PreparedVOC:
    """Add ``classes.txt``, ``SegmentationClassAug/`` and ``train_aug.txt`` to ``voc_root``.

    ``voc_root`` is the extracted ``VOCdevkit/VOC2012`` folder, ``sbd_root`` the
    extracted ``benchmark_RELEASE/dataset`` folder (``cls/``, ``train.txt``,
    ``val.txt``) or None, in which case train_aug is VOC train alone. The mask
    folder is built beside its final name and renamed when complete; the split
    file is written last, so it existing means the preparation finished.
    """
    voc_root = Path(voc_root)
    hint = "voc_root must be the VOCdevkit/VOC2012 folder of VOCtrainval_11-May-2012.tar"
    _require_dir(voc_root / "JPEGImages", hint)
    _require_dir(voc_root / VOC_MASK_DIR, hint)
    voc_train = read_split(voc_root / SPLIT_DIR / "train.txt")
    voc_val = read_split(voc_root / SPLIT_DIR / "val.txt")
    ensure_classes_file(voc_root)

    sbd_train: list[str] = []
    sbd_val: list[str] = []
    if sbd_root is not None:
        sbd_root = Path(sbd_root)
        sbd_hint = "sbd_root must be the benchmark_RELEASE/dataset folder of benchmark.tgz"
        _require_dir(sbd_root / "cls", sbd_hint)
        sbd_train = read_split(sbd_root / "train.txt")
        sbd_val = read_split(sbd_root / "val.txt")
    train_aug = train_aug_ids(voc_train, voc_val, sbd_train, sbd_val)
    if not train_aug:
        raise ValueError(f"train_aug for {voc_root} is empty; check the split files")

    images = _stems(voc_root / "JPEGImages", ".jpg")
    missing = [i for i in train_aug if i not in images]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} train_aug images are not in {voc_root / 'JPEGImages'} "
            f"(first: {missing[:3]}); the VOC 2012 archive looks incomplete, extract it again"
        )

    voc_masks = _stems(voc_root / VOC_MASK_DIR, ".png")
    missing = [i for i in (*voc_train, *voc_val) if i not in voc_masks]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} masks of VOC train/val are not in {voc_root / VOC_MASK_DIR} "
            f"(first: {missing[:3]}); extract the VOC 2012 archive again"
        )

    wanted = sorted(set(train_aug) | set(voc_train) | set(voc_val))
    n_voc = n_sbd = 0
    with atomic_directory(voc_root / AUG_MASK_DIR) as tmp:
        for image_id in tqdm(wanted, desc="SegmentationClassAug", disable=not progress):
            out = tmp / f"{image_id}.png"
            if image_id in voc_masks:
                shutil.copyfile(voc_root / VOC_MASK_DIR / f"{image_id}.png", out)
                n_voc += 1
            else:  # not a VOC train/val id (those all have VOC masks), so an SBD id
                mat_path = sbd_root / "cls" / f"{image_id}.mat"
                if not mat_path.is_file():
                    raise FileNotFoundError(
                        f"SBD mask {mat_path} is missing although {image_id} is in the SBD "
                        "splits; extract benchmark.tgz again"
                    )
                mask = sbd_mat_to_png(mat_path)
                _check_size(mask, voc_root / "JPEGImages" / f"{image_id}.jpg", mat_path)
                save_mask(out, mask)
                n_sbd += 1
    write_text(voc_root / SPLIT_DIR / f"{TRAIN_AUG}.txt", "\n".join(train_aug) + "\n")
    log.info(
        "%s: train_aug has %d ids; %s holds %d VOC masks and %d converted SBD masks",
        voc_root,
        len(train_aug),
        AUG_MASK_DIR,
        n_voc,
        n_sbd,
    )
    return PreparedVOC(voc_root, train_aug, n_voc, n_sbd)


def _check_size(mask: np.ndarray, image_path: Path, mat_path: Path) -> None:
    """The SBD mask must cover its image exactly (reads only the JPEG header)."""
    with Image.open(image_path) as image:
        width, height = image.size
    if mask.shape != (height, width):
        raise ValueError(
            f"{mat_path}: mask is {mask.shape[1]}x{mask.shape[0]} but {image_path} is "
            f"{width}x{height}; the SBD and VOC archives do not match"
        )
