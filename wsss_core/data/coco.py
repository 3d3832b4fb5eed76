"""What is specific to COCO 2014: its 80 categories and instance annotations -> label masks.

COCO numbers its 80 categories 1..90 with gaps; the label masks number them 1..80 in the
order of those ids (the standard order: person 1, ..., toothbrush 80), 0 is background.

``label_mask`` rasterises the instances of one image (polygons, uncompressed RLE, compressed
RLE, with pycocotools) into a VOC-style label mask:

- overlaps: instances are painted from the largest (pixel count) to the smallest, so a
  smaller object lying on a larger one (a cup on a dining table, a person on a bed) keeps
  its pixels; equal sizes keep the annotation order (the later on top);
- crowd regions (``iscrowd: 1``) are 255 (ignored by training and scoring) wherever no
  single instance covers them: COCO marks them as "many objects, not outlined one by one",
  so neither background nor a reliable class;
- no border band: VOC's 255 band along object outlines comes from VOC's own annotation
  protocol (its masks were drawn with an uncertain 5-px boundary). COCO's polygons carry no
  such band, so a mask rasterised from them has none unless one is added on purpose; none is
  added here (nor, as far as we can tell, in the COCO masks of WSSS work): no pixel outside a
  crowd region is 255.

Image-level labels are every category with an annotation in the image, crowd ones
included (they are in the image), also when the mask shows none of its pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from wsss_core.data.palette import IGNORE_INDEX

# (COCO category id, name), in the order of the ids: label = position + 1
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"),
    (6, "bus"), (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"),
    (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench"),
    (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
    (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"),
    (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
    (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"),
    (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"),
    (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"),
    (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"),
    (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip
COCO_CLASSES: tuple[str, ...] = tuple(name for _, name in COCO_CATEGORIES)
# COCO category id -> label 1..80
COCO_LABELS: dict[int, int] = {cat: label for label, (cat, _) in enumerate(COCO_CATEGORIES, 1)}

Annotation = Mapping[str, Any]


def check_categories(categories: Sequence[Mapping[str, Any]], source: str) -> None:
    """The ``categories`` of an instances file must be COCO's 80 (ids and names)."""
    found = sorted((int(c["id"]), str(c["name"])) for c in categories)
    if tuple(found) != COCO_CATEGORIES:
        extra = sorted(set(found) - set(COCO_CATEGORIES))[:3]
        missing = sorted(set(COCO_CATEGORIES) - set(found))[:3]
        raise ValueError(
            f"{source}: the categories are not COCO's 80 (unexpected {extra}, missing "
            f"{missing}); use instances_train2014.json / instances_val2014.json of "
            "annotations_trainval2014.zip"
        )


def instance_rle(ann: Annotation, height: int, width: int) -> dict | None:
    """The RLE of one annotation (None for a polygon list without a polygon): a polygon list,
    or an RLE (uncompressed with a list of counts, as COCO stores crowd regions, or compressed
    with a string)."""
    segm = ann.get("segmentation")
    where = f"annotation {ann.get('id')} (image {ann.get('image_id')})"
    if isinstance(segm, list):
        polygons = [p for p in segm if len(p) >= 6]  # a polygon needs three points
        if not polygons:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if [int(v) for v in segm["size"]] != [height, width]:
            raise ValueError(
                f"{where}: its RLE is {segm['size'][1]}x{segm['size'][0]} but the image is "
                f"{width}x{height}; the instances file is corrupt, extract it again"
            )
        if isinstance(segm["counts"], list):
            return mask_utils.frPyObjects(segm, height, width)
        return segm
    raise ValueError(
        f"{where}: segmentation is neither a polygon list nor an RLE; the instances file "
        "is corrupt, extract it again"
    )


def _decode(rle: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' __array__ predates numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def instance_mask(ann: Annotation, height: int, width: int) -> np.ndarray:
    """The bool [H, W] mask of one annotation (``instance_rle`` decoded)."""
    rle = instance_rle(ann, height, width)
    if rle is None:
        return np.zeros((height, width), dtype=bool)
    return _decode(rle).astype(bool)


def _paint(mask: np.ndarray, rle: dict, value: int) -> None:
    """Set the pixels of ``rle`` to ``value``, touching only its bounding box."""
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    if w <= 0 or h <= 0:
        return
    rows = slice(int(y), int(np.ceil(y + h)))
    cols = slice(int(x), int(np.ceil(x + w)))
    region = mask[rows, cols]
    region[_decode(rle)[rows, cols].astype(bool)] = value


def category_label(ann: Annotation) -> int:
    """The label 1..80 of an annotation's category."""
    cat = ann.get("category_id")
    if cat not in COCO_LABELS:
        raise ValueError(
            f"annotation {ann.get('id')} (image {ann.get('image_id')}) has category_id "
            f"{cat}, not one of COCO's 80; the instances file is corrupt, extract it again"
        )
    return COCO_LABELS[cat]


def label_mask(annotations: Iterable[Annotation], height: int, width: int) -> np.ndarray:
    """The uint8 [H, W] label mask of one image (0 background, 1..80, 255 crowd); see the
    module docstring for the overlap and crowd rules."""
    mask = np.zeros((height, width), dtype=np.uint8)
    objects: list[tuple[int, int, int, dict]] = []
    for order, ann in enumerate(annotations):
        label = category_label(ann)
        rle = instance_rle(ann, height, width)
        if rle is None:
            continue
        if ann.get("iscrowd", 0):
            _paint(mask, rle, IGNORE_INDEX)  # first: any single instance covers it
        else:
            objects.append((int(mask_utils.area(rle)), order, label, rle))
    # largest first; among equal sizes the annotation order (the later painted last, on top)
    for _size, _order, label, rle in sorted(objects, key=lambda o: (-o[0], o[1])):
        _paint(mask, rle, label)
    return mask


def image_labels(annotations: Iterable[Annotation]) -> list[int]:
    """The labels 1..80 of the categories annotated in an image (crowd included), sorted."""
    return sorted({category_label(ann) for ann in annotations})
