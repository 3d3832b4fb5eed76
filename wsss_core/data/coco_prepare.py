"""Turn the extracted COCO 2014 archives into the VOC-layout tree the workflow reads.

Two steps, so that a cluster converts the 123k images in parallel:

``convert_shard`` (rule convert_coco, one job per shard) reads the instance files and writes,
for its share of the images (every n-th of the sorted ids of both splits), a shard folder
with ``SegmentationClass/<id>.png`` (``coco.label_mask``), ``Annotations/<id>.xml`` (one
``object/name`` per annotated category: the image-level labels, label source ``xml``) and
``ImageSets/Segmentation/<split>.txt`` (its ids of each split).

``gather_tree`` (rule prepare_coco) merges the shard folders into the dataset root:
``SegmentationClass/``, ``Annotations/``, the split lists, ``classes.txt`` (the 80 names)
and ``JPEGImages/<id>.jpg``, hard links to the extracted images (no second copy; a copy
where the filesystem refuses links). The image id is the file stem
(``COCO_train2014_000000000009``).

The splits are the literature's: ``train`` is train2014, ``val`` val2014, each without the
images that have no annotation (82,081 and 40,137 of 82,783 and 40,504).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image

from wsss_core.data.coco import COCO_CLASSES, check_categories, image_labels, label_mask
from wsss_core.data.palette import save_mask
from wsss_core.io import atomic_directory, write_text
from wsss_core.shards import gather_mask_dirs, shard_ids

log = logging.getLogger(__name__)

# split name -> the COCO 2014 folder (in the archive and the instances file name)
SPLITS: dict[str, str] = {"train": "train2014", "val": "val2014"}
SPLIT_DIR = Path("ImageSets") / "Segmentation"


@dataclass
class Instances:
    """One instances file: images (id -> record) with their annotations, by file stem."""

    path: Path
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    annotations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def annotated(self) -> list[str]:
        """Stems of the images with at least one annotation, sorted."""
        return sorted(stem for stem in self.images if self.annotations.get(stem))


def load_instances(path: str | os.PathLike) -> Instances:
    """Read ``instances_<split>2014.json``: check its categories, index annotations by image."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"instances file {path} is missing; extract annotations_trainval2014.zip again"
        )
    try:
        data = json.loads(path.read_text())
        images, annotations, categories = data["images"], data["annotations"], data["categories"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"cannot read instances file {path} ({err!r}); it is no COCO instances file, "
            "extract annotations_trainval2014.zip again"
        ) from err
    check_categories(categories, str(path))
    found = Instances(path)
    stem_of: dict[int, str] = {}
    for record in images:
        stem = Path(record["file_name"]).stem
        if stem in found.images:
            raise ValueError(f"{path}: image file name {record['file_name']} listed twice")
        found.images[stem] = record
        stem_of[record["id"]] = stem
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ann in annotations:
        stem = stem_of.get(ann.get("image_id"))
        if stem is None:
            raise ValueError(
                f"{path}: annotation {ann.get('id')} names image {ann.get('image_id')}, which "
                "is not in the file; extract annotations_trainval2014.zip again"
            )
        by_image[stem].append(ann)
    found.annotations = dict(by_image)
    return found


def annotation_xml(stem: str, width: int, height: int, labels: Sequence[int]) -> str:
    """A VOC-style annotation: the image's size and one object per present class."""
    objects = "".join(
        f"<object><name>{escape(COCO_CLASSES[label - 1])}</name></object>" for label in labels
    )
    return (
        f"<annotation><folder>COCO2014</folder><filename>{stem}.jpg</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"{objects}</annotation>\n"
    )


def _check_image_size(record: Mapping[str, Any], image: Path) -> None:
    """The instances file's size of an image must be the JPEG's (reads only the header)."""
    if not image.is_file():
        raise FileNotFoundError(
            f"image {image} is missing although the instances file lists it; extract the "
            "image archive again"
        )
    with Image.open(image) as opened:
        width, height = opened.size
    if (width, height) != (record["width"], record["height"]):
        raise ValueError(
            f"{image} is {width}x{height} but the instances file says "
            f"{record['width']}x{record['height']}; the image and annotation archives do not "
            "match"
        )


def convert_shard(
    instances: Mapping[str, str | os.PathLike],
    images: Mapping[str, str | os.PathLike],
    shard: int,
    num_shards: int,
    out: str | os.PathLike,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the shard folder ``out`` for shard ``shard`` of ``num_shards`` (see the module
    docstring); ``instances`` and ``images`` map each split to its instances file and image
    folder. Returns the number of images converted."""
    loaded = {split: load_instances(path) for split, path in instances.items()}
    split_of: dict[str, str] = {}
    for split, found in loaded.items():
        for stem in found.annotated:
            split_of[stem] = split
    mine = shard_ids(sorted(split_of), shard, num_shards)
    with atomic_directory(out) as tmp:
        for folder in ("SegmentationClass", "Annotations"):
            (tmp / folder).mkdir()
        for stem in mine:
            found = loaded[split_of[stem]]
            record, anns = found.images[stem], found.annotations[stem]
            height, width = int(record["height"]), int(record["width"])
            _check_image_size(record, Path(images[split_of[stem]]) / f"{stem}.jpg")
            save_mask(tmp / "SegmentationClass" / f"{stem}.png", label_mask(anns, height, width))
            xml = annotation_xml(stem, width, height, image_labels(anns))
            (tmp / "Annotations" / f"{stem}.xml").write_text(xml)
            if progress is not None:
                progress(1)
        for split in loaded:
            ids = [stem for stem in mine if split_of[stem] == split]
            write_text(tmp / SPLIT_DIR / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    return len(mine)


@dataclass(frozen=True)
class PreparedCOCO:
    """What ``gather_tree`` wrote: the root and the ids of each split."""

    root: Path
    splits: dict[str, list[str]]


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rerun the convert_coco job of that shard")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def gather_tree(
    shard_dirs: Sequence[str | os.PathLike],
    images: Mapping[str, str | os.PathLike],
    root: str | os.PathLike,
) -> PreparedCOCO:
    """Merge the ``convert_shard`` folders into the dataset ``root`` (built beside it and
    renamed when complete); ``images`` maps each split to its extracted image folder."""
    shard_dirs = [Path(s) for s in shard_dirs]
    splits: dict[str, list[str]] = {}
    for split in images:
        ids: list[str] = []
        for shard in shard_dirs:
            ids += _read_ids(shard / SPLIT_DIR / f"{split}.txt")
        if len(set(ids)) != len(ids):
            raise ValueError(f"the shards of {split} list ids twice; rerun convert_coco")
        if not ids:
            raise ValueError(
                f"split {split} has no annotated image; check the instances file of "
                f"{SPLITS.get(split, split)}"
            )
        splits[split] = sorted(ids)
    with atomic_directory(root) as tmp:
        gather_mask_dirs([s / "SegmentationClass" for s in shard_dirs], tmp / "SegmentationClass")
        gather_mask_dirs([s / "Annotations" for s in shard_dirs], tmp / "Annotations", "*.xml")
        (tmp / "JPEGImages").mkdir()
        for split, ids in splits.items():
            folder = Path(images[split])
            for stem in ids:
                src = folder / f"{stem}.jpg"
                if not src.is_file():
                    raise FileNotFoundError(
                        f"image {src} is missing; extract {SPLITS.get(split, split)}.zip again"
                    )
                _link_or_copy(src, tmp / "JPEGImages" / f"{stem}.jpg")
            write_text(tmp / SPLIT_DIR / f"{split}.txt", "".join(f"{i}\n" for i in ids))
        write_text(tmp / "classes.txt", "\n".join(COCO_CLASSES) + "\n")
    log.info(
        "%s: %s", root, ", ".join(f"{split} {len(ids)} images" for split, ids in splits.items())
    )
    return PreparedCOCO(Path(root), splits)
