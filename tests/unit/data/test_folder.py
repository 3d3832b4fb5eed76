"""A folder of the user's own images (wsss_core.data.folder): label tables in both formats,
images of any format, masks checked, the tree the stages read, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wsss_core.cli import UserError
from wsss_core.data.folder import parse_label_table, prepare_folder, table_path
from wsss_core.data.folder_example import write_example_folder
from wsss_core.data.labels import build_label_table
from wsss_core.data.layout import (
    image_path,
    load_gt_mask,
    load_image,
    read_class_names,
    read_split,
    split_has_masks,
    validation_ids,
)

CLASSES = ["cat", "dog", "bird"]


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def make_folder(root: Path, masks: bool = True) -> Path:
    """Two train images (PNG 5x4, JPEG 6x3) and one val image (BMP 2x2); masks for train."""
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    shapes = {"a": (4, 5, "png"), "b": (3, 6, "jpg"), "c": (2, 2, "bmp")}
    for name, (h, w, suffix) in shapes.items():
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{name}.{suffix}")
    if masks:
        (root / "masks").mkdir()
        Image.fromarray(np.full((4, 5), 2, np.uint8), mode="L").save(root / "masks" / "a.png")
        mask_b = np.array([[0, 1, 255, 3, 0, 0]] * 3, dtype=np.uint8)
        palette = Image.fromarray(mask_b, mode="P")
        palette.putpalette([0, 0, 0] * 256)
        palette.save(root / "masks" / "b.png")
    write_csv(root / "train.csv", "id,dog,cat,bird\na,0,1,0\nb.jpg,1,1,1\n")
    write_csv(root / "val.csv", "image,labels\nc,bird dog\n")
    return root


def test_label_table_formats_give_the_same_table(tmp_path):
    columns = write_csv(tmp_path / "a.csv", "image,bird,cat,dog\nx,1,0,1\ny,0,0,0\n")
    names = write_csv(tmp_path / "b.csv", "image,labels\nx,dog bird\ny,\n")
    expected = pd.DataFrame({"image_id": ["x", "y"], "cat": [0, 0], "dog": [1, 0], "bird": [1, 0]})
    for path in (columns, names):
        pd.testing.assert_frame_equal(parse_label_table(path, CLASSES), expected)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("image,cat,dog\nx,1,0\n", "missing: ['bird']"),
        ("image,cat,dog,bird,cow\nx,1,0,0,1\n", "unknown: ['cow']"),
        ("image,cat,dog,bird\nx,1,2,0\n", "image 'x' has '2' for class 'dog'"),
        ("image,labels\nx,cat cow\n", "image 'x' names class 'cow'"),
        ("image,cat,dog,bird\nx,1,0,0\nx,0,1,0\n", "image id 'x' is listed twice"),
        ("image,cat,dog,bird\n,1,0,0\n", "empty image id in data row 1"),
        ("image\nx\n", "needs a header"),
    ],
)
def test_bad_label_tables_name_the_file_and_the_problem(tmp_path, text, says):
    path = write_csv(tmp_path / "t.csv", text)
    with pytest.raises(UserError, match=str(path)) as err:
        parse_label_table(path, CLASSES)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_prepare_writes_the_layout_every_stage_reads(tmp_path):
    folder = make_folder(tmp_path / "mine")
    tree = tmp_path / "tree"
    splits = prepare_folder(folder, tree, ["train", "val"])
    assert [(s.name, s.images, s.has_masks) for s in splits] == [
        ("train", 2, True),
        ("val", 1, False),
    ]
    assert read_class_names(tree) == CLASSES
    assert read_split(tree, "train") == ["a", "b"]  # b.jpg in the table: the file's name
    # the JPEG is copied byte for byte; the PNG and the BMP become lossless PNGs
    assert image_path(tree, "b").read_bytes() == (folder / "images" / "b.jpg").read_bytes()
    for name, suffix in (("a", "png"), ("c", "bmp")):
        assert image_path(tree, name).suffix == ".png"
        with Image.open(folder / "images" / f"{name}.{suffix}") as original:
            np.testing.assert_array_equal(load_image(tree, name), np.asarray(original))
    np.testing.assert_array_equal(load_gt_mask(tree, "a"), np.full((4, 5), 2))
    np.testing.assert_array_equal(load_gt_mask(tree, "b")[0], [0, 1, 255, 3, 0, 0])
    assert split_has_masks(tree, "train") and not split_has_masks(tree, "val")
    # make_labels reads the tables in classes.txt's order
    train = build_label_table(tree, "train", "table")
    assert train.to_dict("list") == {
        "image_id": ["a", "b"],
        "cat": [1, 1],
        "dog": [0, 1],
        "bird": [0, 1],
    }
    assert build_label_table(tree, "val", "table").iloc[0, 1:].tolist() == [0, 1, 1]
    assert table_path(tree, "val").is_file()


def test_one_image_by_two_names_is_an_error(tmp_path):
    folder = make_folder(tmp_path / "mine")
    write_csv(folder / "train.csv", "id,dog,cat,bird\na,0,1,0\na.png,1,1,1\n")
    with pytest.raises(UserError, match="lists image 'a' twice"):
        prepare_folder(folder, tmp_path / "tree", ["train"])


def test_exif_rotated_jpeg_is_written_upright(tmp_path):
    folder = make_folder(tmp_path / "mine", masks=False)
    pixels = np.zeros((3, 6, 3), np.uint8)
    pixels[0, :] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    Image.fromarray(pixels).save(folder / "images" / "b.jpg", exif=exif, quality=100)
    tree = tmp_path / "tree"
    prepare_folder(folder, tree, ["train"])
    assert image_path(tree, "b").suffix == ".png"
    assert load_image(tree, "b").shape == (6, 3, 3)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda f: (f / "images" / "a.png").unlink(), "lists image 'a' but"),
        (lambda f: (f / "masks" / "b.png").unlink(), "holds masks for 1 of the 2 images"),
        (
            lambda f: Image.fromarray(np.full((4, 5), 4, np.uint8), mode="L").save(
                f / "masks" / "a.png"
            ),
            "holds label(s) [4]",
        ),
        (
            lambda f: Image.fromarray(np.zeros((5, 5), np.uint8), mode="L").save(
                f / "masks" / "a.png"
            ),
            "is 5x5 but its image is 5x4",
        ),
        (
            lambda f: Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(f / "masks" / "a.png"),
            "is a RGB image",
        ),
        (lambda f: (f / "images" / "a.jpg").write_bytes(b"x"), "have the same id 'a'"),
        (lambda f: (f / "images" / "c.bmp").write_bytes(b"not an image"), "cannot read image"),
        (lambda f: (f / "classes.txt").unlink(), "classes.txt not found"),
    ],
)
def test_a_bad_folder_stops_with_one_line_and_no_tree(tmp_path, change, says):
    folder = make_folder(tmp_path / "mine")
    change(folder)
    tree = tmp_path / "tree"
    with pytest.raises((UserError, ValueError)) as err:
        prepare_folder(folder, tree, ["train", "val"])
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not tree.exists()


def test_the_example_folder_is_a_valid_folder(tmp_path):
    write_example_folder(tmp_path / "ex", num_train=5, num_val=3, masks="train")
    tree = tmp_path / "tree"
    splits = prepare_folder(tmp_path / "ex", tree, ["train", "val"])
    assert [(s.images, s.has_masks) for s in splits] == [(5, True), (3, False)]
    sizes = {load_image(tree, i).shape for i in read_split(tree, "train")}
    assert len(sizes) > 1
    suffixes = {p.suffix for p in (tmp_path / "ex" / "images").iterdir()}
    assert suffixes == {".png", ".jpg", ".bmp"}
    # the tables say what the masks show
    for image_id in read_split(tree, "train"):
        labels = build_label_table(tree, "train", "table").set_index("image_id").loc[image_id]
        present = set(np.unique(load_gt_mask(tree, image_id))) - {0, 255}
        assert {k + 1 for k, v in enumerate(labels) if v} == present


def test_layout_finds_png_images_and_splits_without_masks(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    assert image_path(tmp_path, "x").name == "x.jpg"  # neither: the name errors report
    (tmp_path / "JPEGImages" / "x.png").write_bytes(b"")
    assert image_path(tmp_path, "x").name == "x.png"
    (tmp_path / "JPEGImages" / "x.jpg").write_bytes(b"")
    assert image_path(tmp_path, "x").name == "x.jpg"
    assert split_has_masks(tmp_path, "val")  # no list: every split has masks
    (tmp_path / "splits_without_masks.txt").write_text("val\ntest\n")
    assert not split_has_masks(tmp_path, "val") and split_has_masks(tmp_path, "train")


def test_validation_ids_only_where_the_split_has_masks(tmp_path):
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "val.txt").write_text("".join(f"v{k}\n" for k in range(5)))
    assert validation_ids(tmp_path, "val", 3) == ["v0", "v2", "v4"]  # spread evenly
    assert validation_ids(tmp_path, "val", 9) == [f"v{k}" for k in range(5)]
    assert validation_ids(tmp_path, "val", 0) == []
    assert validation_ids(tmp_path, None, 3) == []
    (tmp_path / "splits_without_masks.txt").write_text("val\n")
    assert validation_ids(tmp_path, "val", 3) == []  # no ground truth to validate on
