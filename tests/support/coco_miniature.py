"""A miniature COCO 2014: the three archives with a few images, laid out as the real ones.

    mini = CocoMiniature(num_train=12, num_val=6)
    coco_zips(folder, mini)          # train2014.zip, val2014.zip, annotations_trainval2014.zip
    mini.expected_mask(image_id)     # the label mask by hand: rectangles painted in a fixed order
    mini.labels(image_id)            # the image-level labels 1..80

Every image is H x W with a few axis-aligned rectangles: a polygon with integer corners
[x0, y0, x1, y0, x1, y1, x0, y1] covers rows y0..y1-1 and columns x0..x1-1, so each expected
mask is numpy slicing. Image i takes layout i % 4:

0. one polygon object;
1. two overlapping objects, the larger one annotated after the smaller: the smaller stays
   on top (a "later on top" rule would bury it);
2. a polygon object and a crowd region (uncompressed RLE, as COCO stores crowds) of another
   category overlapping it: 255 where only the crowd is, the object where both are; the
   crowd's category is an image label although no pixel of the mask shows it;
3. an object given as a compressed RLE (string counts) and an object of two polygons.

Each split also has one image without annotations (not in the split lists), and the instance
files list COCO's 80 categories. The annotation zip holds captions too, as the real one does.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from wsss_core.data.coco import COCO_CATEGORIES, COCO_LABELS
from wsss_core.data.palette import IGNORE_INDEX

H, W = 40, 48
# COCO category ids drawn, in turn (person, car, traffic light, dog, pizza, tv)
CATEGORIES = (1, 3, 10, 18, 59, 72)


@dataclass(frozen=True)
class Box:
    """A rectangle: rows top..bottom-1, columns left..right-1, of a COCO category."""

    category: int
    top: int
    left: int
    bottom: int
    right: int
    crowd: bool = False
    kind: str = "polygon"  # polygon | two_polygons | rle

    def pixels(self) -> np.ndarray:
        mask = np.zeros((H, W), dtype=bool)
        mask[self.top : self.bottom, self.left : self.right] = True
        return mask

    def segmentation(self):
        t, left, b, r = self.top, self.left, self.bottom, self.right
        if self.crowd:  # uncompressed RLE, column-major counts
            counts, value, run = [], False, 0
            for pixel in self.pixels().flatten(order="F"):
                if pixel != value:
                    counts.append(run)
                    value, run = pixel, 0
                run += 1
            counts.append(run)
            return {"counts": counts, "size": [H, W]}
        if self.kind == "rle":
            rle = mask_utils.encode(np.asfortranarray(self.pixels().astype(np.uint8)))
            return {"counts": rle["counts"].decode("ascii"), "size": [H, W]}
        if self.kind == "two_polygons":  # the left and the right half
            mid = (left + r) // 2
            return [
                [left, t, mid, t, mid, b, left, b],
                [mid, t, r, t, r, b, mid, b],
            ]
        return [[left, t, r, t, r, b, left, b]]


@dataclass(frozen=True)
class CocoMiniature:
    num_train: int = 12
    num_val: int = 6

    def ids(self, split: str) -> list[str]:
        """The annotated images of a split (train2014 numbers from 9, val2014 from 42)."""
        count, first, folder = (
            (self.num_train, 9, "train2014") if split == "train" else (self.num_val, 42, "val2014")
        )
        return [f"COCO_{folder}_{first + 7 * i:012d}" for i in range(count)]

    def unannotated(self, split: str) -> str:
        folder = "train2014" if split == "train" else "val2014"
        return f"COCO_{folder}_{999_999:012d}"

    @property
    def all_ids(self) -> list[str]:
        return sorted(self.ids("train") + self.ids("val"))

    def index(self, image_id: str) -> int:
        return self.all_ids.index(image_id)

    def boxes(self, image_id: str) -> list[Box]:
        """The annotations of an image, in annotation order."""
        i = self.index(image_id)
        a, b = CATEGORIES[i % len(CATEGORIES)], CATEGORIES[(i + 1) % len(CATEGORIES)]
        shift = i % 3
        layout = i % 4
        if layout == 0:
            return [Box(a, 6 + shift, 8, 30, 36 + shift)]
        if layout == 1:  # small (listed first) inside large (listed second)
            return [Box(b, 14, 18 + shift, 24, 30), Box(a, 4, 6, 36, 44)]
        if layout == 2:
            return [Box(a, 4, 4, 24, 24 + shift), Box(b, 16, 16, 36, 44, crowd=True)]
        return [
            Box(a, 2, 2, 18, 20 + shift, kind="rle"),
            Box(b, 20, 10, 38, 40, kind="two_polygons"),
        ]

    def expected_mask(self, image_id: str) -> np.ndarray:
        """By hand: the crowd as 255, then the objects, small over large (per layout)."""
        mask = np.zeros((H, W), np.uint8)
        boxes = self.boxes(image_id)
        layout = self.index(image_id) % 4
        for box in boxes:
            if box.crowd:
                mask[box.pixels()] = IGNORE_INDEX
        painted = list(reversed(boxes)) if layout == 1 else boxes  # layout 1: large first
        for box in painted:
            if not box.crowd:
                mask[box.pixels()] = COCO_LABELS[box.category]
        return mask

    def labels(self, image_id: str) -> list[int]:
        """The image-level labels 1..80 (crowd categories included)."""
        return sorted({COCO_LABELS[box.category] for box in self.boxes(image_id)})

    def label_rows(self, ids: list[str]) -> list[list[int]]:
        """The label table's 0/1 rows (80 classes) of ``ids``."""
        return [[int(c in self.labels(i)) for c in range(1, 81)] for i in ids]

    def image(self, image_id: str) -> np.ndarray:
        """RGB: a noisy grey background with each object in a colour of its class."""
        index = self.index(image_id) if image_id in self.all_ids else 99
        rng = np.random.default_rng(index)
        pixels = np.full((H, W, 3), 110, np.int16)
        if image_id in self.all_ids:
            for box in self.boxes(image_id):
                colour = np.random.default_rng(box.category).integers(0, 256, 3)
                pixels[box.pixels()] = colour
        pixels += rng.integers(-10, 11, pixels.shape, dtype=np.int16)
        return np.clip(pixels, 0, 255).astype(np.uint8)

    def instances(self, split: str) -> dict:
        """instances_<split>2014.json: images, annotations, COCO's 80 categories."""
        images, annotations = [], []
        for stem in [*self.ids(split), self.unannotated(split)]:
            image_number = int(stem.rsplit("_", 1)[1])
            images.append({"id": image_number, "file_name": f"{stem}.jpg", "height": H, "width": W})
            if stem == self.unannotated(split):
                continue
            for box in self.boxes(stem):
                annotations.append(
                    {
                        "id": len(annotations) + 1 + (0 if split == "train" else 10_000),
                        "image_id": image_number,
                        "category_id": box.category,
                        "segmentation": box.segmentation(),
                        "area": float(box.pixels().sum()),
                        "bbox": [box.left, box.top, box.right - box.left, box.bottom - box.top],
                        "iscrowd": int(box.crowd),
                    }
                )
        categories = [
            {"id": cat, "name": name, "supercategory": "thing"} for cat, name in COCO_CATEGORIES
        ]
        return {
            "info": {"description": "miniature COCO 2014"},
            "images": images,
            "annotations": annotations,
            "categories": categories[::-1],  # any order: the ids give the labels
        }


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_images(folder: Path, mini: CocoMiniature, split: str) -> Path:
    """The extracted ``train2014/`` or ``val2014/`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in [*mini.ids(split), mini.unannotated(split)]:
        (folder / f"{stem}.jpg").write_bytes(_jpeg(mini.image(stem)))
    return folder


def write_annotations(folder: Path, mini: CocoMiniature) -> Path:
    """The extracted ``annotations/`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train2014"), ("val", "val2014")):
        (folder / f"instances_{name}.json").write_text(json.dumps(mini.instances(split)))
    return folder


def coco_zips(folder: Path, mini: CocoMiniature) -> dict[str, Path]:
    """train2014.zip, val2014.zip and annotations_trainval2014.zip in ``folder``, by archive."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, name in (("train", "train2014"), ("val", "val2014")):
        paths[name] = folder / f"{name}.zip"
        with zipfile.ZipFile(paths[name], "w") as zf:
            zf.writestr(f"{name}/", "")
            for stem in [*mini.ids(split), mini.unannotated(split)]:
                zf.writestr(f"{name}/{stem}.jpg", _jpeg(mini.image(stem)))
    paths["annotations_trainval2014"] = folder / "annotations_trainval2014.zip"
    with zipfile.ZipFile(paths["annotations_trainval2014"], "w", zipfile.ZIP_DEFLATED) as zf:
        for split, name in (("train", "train2014"), ("val", "val2014")):
            zf.writestr(f"annotations/instances_{name}.json", json.dumps(mini.instances(split)))
            zf.writestr(f"annotations/captions_{name}.json", json.dumps({"annotations": []}))
    return paths


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()
