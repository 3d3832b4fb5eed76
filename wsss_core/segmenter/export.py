"""Segmenter predictions on the PASCAL VOC 2012 test images, in the evaluation server's layout.

The server takes a tar whose members are ``results/VOC2012/Segmentation/comp6_test_cls/<id>.png``
(comp6: trained on data beyond VOC's own masks): one palette PNG per test image, at the image's
size, labels 0 (background) .. 20 in VOC's class order (VOC palette). ``check_voc_classes``
makes sure the segmenter predicts exactly those labels; ``pack_results`` writes the tar.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

from wsss_core.data.layout import image_path, read_split
from wsss_core.data.voc import VOC_CLASSES
from wsss_core.io import atomic_path

RESULTS_FOLDER = Path("results") / "VOC2012" / "Segmentation" / "comp6_test_cls"
# the tar's members carry this time (a fixed one: the same predictions, the same bytes)
MEMBER_MTIME = 1_341_100_800  # 2012-07-01


def check_voc_classes(class_names: Sequence[str], model: str | os.PathLike) -> None:
    """The segmenter ``model`` predicts the 20 VOC classes in VOC's order (labels 1..20)."""
    if list(class_names) != list(VOC_CLASSES):
        raise ValueError(
            f"segmenter {model} predicts the classes {list(class_names)[:5]}..., not the 20 "
            "PASCAL VOC classes in VOC's order; the VOC test export needs a run with "
            "data.source: voc2012"
        )


def pack_results(
    masks_dir: str | os.PathLike, ids: Sequence[str], tar_path: str | os.PathLike
) -> int:
    """Write ``tar_path`` holding ``<masks_dir>/<id>.png`` of every id as
    ``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` (in the order of ``ids``, fixed
    owner and time); return the member count. A missing mask is an error naming it."""
    masks_dir = Path(masks_dir)
    missing = [i for i in ids if not (masks_dir / f"{i}.png").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{masks_dir} lacks the predictions of {len(missing)} test images "
            f"({', '.join(missing[:3])}); re-run export_voc_test"
        )
    with atomic_path(tar_path) as tmp, tarfile.open(tmp, "w") as tar:
        for image_id in ids:
            path = masks_dir / f"{image_id}.png"
            info = tarfile.TarInfo(str(RESULTS_FOLDER / path.name))
            info.size = path.stat().st_size
            info.mtime = MEMBER_MTIME
            info.mode = 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return len(ids)


def voc_test_ids(root: str | os.PathLike, split: str = "test") -> list[str]:
    """The ids of ``ImageSets/Segmentation/<split>.txt`` of an extracted VOC2012test.tar, each
    with its ``JPEGImages/<id>.jpg`` (a missing one is an error naming it)."""
    ids = read_split(root, split)
    missing = [i for i in ids if not image_path(root, i).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images of the {split} list are not in {Path(root) / 'JPEGImages'} "
            f"(first {missing[0]}.jpg); the test archive is incomplete: download it again"
        )
    return ids
