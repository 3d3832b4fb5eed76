"""COCO instance annotations -> label masks, by hand on tiny images, and the shard/gather steps
on the miniature COCO (tests/support/coco_miniature.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from coco_miniature import CocoMiniature, write_annotations, write_images
from PIL import Image
from pycocotools import mask as mask_utils

from wsss_core.data.coco import (
    COCO_CATEGORIES,
    COCO_CLASSES,
    COCO_LABELS,
    check_categories,
    image_labels,
    instance_mask,
    label_mask,
)
from wsss_core.data.coco_prepare import convert_shard, gather_tree, load_instances
from wsss_core.data.labels import build_label_table
from wsss_core.data.palette import load_mask

H, W = 5, 6


def polygon(cat: int, x0: int, y0: int, x1: int, y1: int, crowd: int = 0, ann_id: int = 1):
    return {
        "id": ann_id,
        "image_id": 7,
        "category_id": cat,
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
        "iscrowd": crowd,
    }


def test_the_80_categories_in_coco_order():
    assert len(COCO_CATEGORIES) == len(COCO_CLASSES) == 80
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    # the ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71, 83: labels are positions, not ids
    assert COCO_LABELS[1] == 1 and COCO_LABELS[13] == 12 and COCO_LABELS[90] == 80
    assert COCO_CLASSES[COCO_LABELS[67] - 1] == "dining table"
    assert COCO_CLASSES[COCO_LABELS[72] - 1] == "tv"


def test_a_polygon_covers_the_pixels_between_its_corners():
    mask = label_mask([polygon(18, 1, 1, 4, 3)], H, W)  # dog -> 17
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 17, 17, 17, 0, 0],
            [0, 17, 17, 17, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        np.uint8,
    )
    np.testing.assert_array_equal(mask, expected)


def test_uncompressed_and_compressed_rle():
    # column-major runs: 6 background, 3 object (column 1, rows 1-3), 21 background
    uncompressed = {
        "id": 2,
        "category_id": 1,
        "segmentation": {"counts": [6, 3, 21], "size": [5, 6]},
    }
    diagonal = np.eye(H, W, dtype=np.uint8)
    rle = mask_utils.encode(np.asfortranarray(diagonal))
    compressed = {
        "id": 3,
        "category_id": 3,
        "segmentation": {"counts": rle["counts"].decode(), "size": [H, W]},
    }
    expected = np.zeros((H, W), np.uint8)
    expected[1:4, 1] = 1
    np.testing.assert_array_equal(label_mask([uncompressed], H, W), expected)
    np.testing.assert_array_equal(label_mask([compressed], H, W), diagonal * 3)


def test_crowd_is_ignored_where_no_object_covers_it():
    person = polygon(1, 0, 0, 3, 2)  # rows 0-1, columns 0-2
    crowd = polygon(3, 2, 1, 6, 4, crowd=1, ann_id=2)  # rows 1-3, columns 2-5
    expected = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 255, 255, 255],
            [0, 0, 255, 255, 255, 255],
            [0, 0, 255, 255, 255, 255],
            [0, 0, 0, 0, 0, 0],
        ],
        np.uint8,
    )
    # the crowd annotated first or last: the same mask
    np.testing.assert_array_equal(label_mask([person, crowd], H, W), expected)
    np.testing.assert_array_equal(label_mask([crowd, person], H, W), expected)
    assert image_labels([person, crowd]) == [1, 3]  # the crowd's class is in the image


def test_the_smaller_object_lies_on_top_whatever_the_order():
    table = polygon(67, 0, 0, 6, 5)  # dining table -> 61, the whole image
    cup = polygon(47, 2, 1, 4, 3, ann_id=2)  # cup -> 42, 2 x 2
    expected = np.full((H, W), 61, np.uint8)
    expected[1:3, 2:4] = 42
    np.testing.assert_array_equal(label_mask([table, cup], H, W), expected)
    np.testing.assert_array_equal(label_mask([cup, table], H, W), expected)


def test_equal_sizes_keep_the_annotation_order():
    a = polygon(1, 0, 0, 3, 2)
    b = polygon(3, 1, 1, 4, 3, ann_id=2)  # the same size, overlapping a at (1, 1), (1, 2)
    ab, ba = label_mask([a, b], H, W), label_mask([b, a], H, W)
    assert ab[1, 1] == ab[1, 2] == 3 and ba[1, 1] == ba[1, 2] == 1
    assert ab[0, 0] == ba[0, 0] == 1 and ab[2, 3] == ba[2, 3] == 3


def test_no_border_band_and_an_empty_image():
    mask = label_mask([polygon(1, 1, 1, 5, 4)], H, W)
    assert set(np.unique(mask)) == {0, 1}  # no 255 along the outline
    np.testing.assert_array_equal(label_mask([], H, W), np.zeros((H, W), np.uint8))


def test_bad_annotations_name_themselves():
    with pytest.raises(ValueError, match="annotation 9 .*category_id 12, not one of COCO's 80"):
        label_mask([{**polygon(12, 0, 0, 2, 2), "id": 9}], H, W)
    wrong_size = {"id": 4, "image_id": 7, "segmentation": {"counts": [30], "size": [6, 5]}}
    with pytest.raises(ValueError, match=r"annotation 4 \(image 7\): its RLE is 5x6 but .* 6x5"):
        instance_mask(wrong_size, H, W)
    with pytest.raises(ValueError, match="neither a polygon list nor an RLE"):
        instance_mask({"id": 5, "segmentation": "oops"}, H, W)
    categories = [{"id": c, "name": n} for c, n in COCO_CATEGORIES]
    check_categories(categories, "x.json")
    with pytest.raises(ValueError, match=r"x.json: the categories are not COCO's 80"):
        check_categories(categories[:-1], "x.json")


# ----------------------------------------------------------------------------- shard and gather

MINI = CocoMiniature(num_train=6, num_val=3)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("coco")
    write_annotations(folder / "annotations", MINI)
    write_images(folder / "train2014", MINI, "train")
    write_images(folder / "val2014", MINI, "val")
    return folder


def sources(folder: Path) -> tuple[dict, dict]:
    instances = {
        "train": folder / "annotations" / "instances_train2014.json",
        "val": folder / "annotations" / "instances_val2014.json",
    }
    return instances, {"train": folder / "train2014", "val": folder / "val2014"}


def test_load_instances_indexes_by_file_stem(extracted: Path):
    found = load_instances(extracted / "annotations" / "instances_train2014.json")
    assert found.annotated == MINI.ids("train")  # the unannotated image is left out
    assert MINI.unannotated("train") in found.images
    first = MINI.ids("train")[0]
    assert len(found.annotations[first]) == len(MINI.boxes(first))


def test_shards_and_gather_build_the_tree(extracted: Path, tmp_path: Path):
    instances, images = sources(extracted)
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    counts = [convert_shard(instances, images, i, 3, shards[i]) for i in range(3)]
    assert counts == [3, 3, 3]  # 9 annotated images over 3 shards, every third
    assert (shards[0] / "ImageSets/Segmentation/train.txt").read_text().split() == [
        i for i in MINI.all_ids[0::3] if "train" in i
    ]
    root = tmp_path / "COCO2014"
    prepared = gather_tree(shards, images, root)
    assert prepared.splits == {"train": MINI.ids("train"), "val": MINI.ids("val")}
    for split in ("train", "val"):
        listed = (root / "ImageSets/Segmentation" / f"{split}.txt").read_text().split()
        assert listed == MINI.ids(split)
    assert (root / "classes.txt").read_text().splitlines() == list(COCO_CLASSES)
    for stem in MINI.all_ids:
        np.testing.assert_array_equal(
            load_mask(root / "SegmentationClass" / f"{stem}.png"), MINI.expected_mask(stem), stem
        )
        folder = images["train" if "train" in stem else "val"]
        assert os.path.samefile(root / "JPEGImages" / f"{stem}.jpg", folder / f"{stem}.jpg")
    assert sorted(p.stem for p in (root / "JPEGImages").iterdir()) == MINI.all_ids
    # the labels of the XML annotations: crowd categories included
    for split in ("train", "val"):
        table = build_label_table(root, split, "xml")
        assert list(table.columns) == ["image_id", *COCO_CLASSES]
        assert table[list(COCO_CLASSES)].to_numpy().tolist() == MINI.label_rows(MINI.ids(split))
    crowd_image = next(i for i in MINI.all_ids if MINI.index(i) % 4 == 2)
    crowd_label = next(COCO_LABELS[b.category] for b in MINI.boxes(crowd_image) if b.crowd)
    assert crowd_label in MINI.labels(crowd_image)
    assert crowd_label not in load_mask(root / "SegmentationClass" / f"{crowd_image}.png")


def test_more_shards_than_images(extracted: Path, tmp_path: Path):
    instances, images = sources(extracted)
    shards = [tmp_path / f"s{i}" for i in range(12)]
    assert sum(convert_shard(instances, images, i, 12, shards[i]) for i in range(12)) == 9
    assert gather_tree(shards, images, tmp_path / "root").splits["val"] == MINI.ids("val")


def test_an_image_of_another_size_is_an_error(extracted: Path, tmp_path: Path):
    instances, images = sources(extracted)
    data = json.loads(instances["val"].read_text())
    data["images"][0]["width"] += 1
    instances["val"] = tmp_path / "instances_val2014.json"
    instances["val"].write_text(json.dumps(data))
    stem = Path(data["images"][0]["file_name"]).stem
    with pytest.raises(ValueError, match=rf"{stem}.jpg is 48x40 but the instances file says 49x40"):
        convert_shard(instances, images, 0, 1, tmp_path / "shard")
    assert not (tmp_path / "shard").exists()


def test_a_missing_image_or_instances_file_is_named(extracted: Path, tmp_path: Path):
    instances, images = sources(extracted)
    with pytest.raises(FileNotFoundError, match="instances file .*nowhere.json is missing"):
        convert_shard({"train": tmp_path / "nowhere.json"}, images, 0, 1, tmp_path / "s")
    (tmp_path / "val2014").mkdir()
    images["val"] = tmp_path / "val2014"
    with pytest.raises(FileNotFoundError, match="COCO_val2014_.*jpg is missing"):
        convert_shard(instances, images, 0, 1, tmp_path / "s")


def test_the_miniature_images_match_their_records(extracted: Path):
    with Image.open(extracted / "train2014" / f"{MINI.ids('train')[0]}.jpg") as image:
        assert image.size == (48, 40)


def test_random_scenes_equal_a_plain_full_image_painting():
    """On random polygons and crowd regions (640 x 480-like, many overlaps), the bounding-box
    painting equals the rule written plainly on whole-image masks: crowd 255, then the objects
    from the largest to the smallest (ties in annotation order)."""
    rng = np.random.default_rng(3)
    h, w = 37, 53
    for _ in range(20):
        anns = []
        for k in range(int(rng.integers(1, 9))):
            xs = rng.uniform(-5, w + 5, int(rng.integers(3, 9)))
            ys = rng.uniform(-5, h + 5, xs.size)
            anns.append(
                {
                    "id": k,
                    "category_id": int(rng.choice([1, 3, 18, 90])),
                    "segmentation": [np.stack([xs, ys], 1).reshape(-1).tolist()],
                    "iscrowd": int(rng.random() < 0.25),
                }
            )
        expected = np.zeros((h, w), np.uint8)
        masks = [instance_mask(a, h, w) for a in anns]
        for a, m in zip(anns, masks, strict=True):
            if a["iscrowd"]:
                expected[m] = 255
        objects = [(-m.sum(), i) for i, (a, m) in enumerate(zip(anns, masks, strict=True))]
        for _neg, i in sorted(o for o in objects if not anns[o[1]]["iscrowd"]):
            expected[masks[i]] = COCO_LABELS[anns[i]["category_id"]]
        np.testing.assert_array_equal(label_mask(anns, h, w), expected)
