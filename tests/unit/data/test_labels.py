"""Image-level label tables: from masks and VOC xml, round trip, and error cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow_utils import load_script

from wsss_core.data.labels import (
    build_label_table,
    labels_from_mask,
    labels_from_voc_xml,
    read_label_table,
    write_label_table,
)
from wsss_core.data.layout import read_class_names, read_split
from wsss_core.data.palette import load_mask, save_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.data.voc import VOC_CLASSES


def test_labels_from_mask_hand_example():
    mask = np.array([[0, 2, 255], [4, 0, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(labels_from_mask(mask, 4), [False, True, False, True])
    np.testing.assert_array_equal(labels_from_mask(np.zeros((2, 2), np.uint8), 3), [0, 0, 0])
    np.testing.assert_array_equal(labels_from_mask(np.full((2, 2), 255, np.uint8), 2), [0, 0])


def test_unknown_mask_label_names_the_value_and_file():
    mask = np.array([[0, 7], [1, 255]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"mask some/file.png: label value\(s\) \[7\]"):
        labels_from_mask(mask, 4, source="some/file.png")


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels") / "ds"
    generate_dataset(root, num_classes=5, image_size=48, num_train=10, num_val=3, seed=2)
    return root


def test_table_from_synthetic_masks_agrees_with_masks(syn_root):
    table = build_label_table(syn_root, "train")
    assert list(table.columns) == ["image_id", "disc", "square", "triangle", "ring", "cross"]
    assert table["image_id"].tolist() == read_split(syn_root, "train")
    for _, row in table.iterrows():
        mask = load_mask(syn_root / "SegmentationClass" / f"{row['image_id']}.png")
        present = sorted(int(v) for v in np.unique(mask) if 1 <= v <= 5)
        assert [c + 1 for c in range(5) if row.iloc[1 + c] == 1] == present
    assert (table.iloc[:, 1:].sum(axis=1) >= 1).all()
    assert set(np.unique(table.iloc[:, 1:].to_numpy())) <= {0, 1}


def test_table_round_trip(syn_root, tmp_path):
    table = build_label_table(syn_root, "val")
    write_label_table(table, tmp_path / "labels" / "val.csv")
    ids, names, labels = read_label_table(tmp_path / "labels" / "val.csv")
    assert ids == table["image_id"].tolist()
    assert names == ["disc", "square", "triangle", "ring", "cross"]
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, table.iloc[:, 1:].to_numpy(dtype=np.float32))
    assert list((tmp_path / "labels").iterdir()) == [tmp_path / "labels" / "val.csv"]


def test_ids_that_look_numeric_stay_strings(tmp_path):
    table = pd.DataFrame({"image_id": ["007", "NA"], "cat": [1, 0]})
    write_label_table(table, tmp_path / "t.csv")
    ids, names, labels = read_label_table(tmp_path / "t.csv")
    assert ids == ["007", "NA"] and names == ["cat"]
    np.testing.assert_array_equal(labels, [[1], [0]])


def _tree(tmp_path, ids, masks=None, classes=("cat", "dog")):
    """A tiny VOC-layout root with given ids (and masks, when given)."""
    root = tmp_path / "root"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for image_id in ids:
        Image.new("RGB", (4, 3)).save(root / "JPEGImages" / f"{image_id}.jpg")
    for image_id, mask in (masks or {}).items():
        save_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
    return root


def test_unknown_label_in_table_builder_names_the_file(tmp_path):
    root = _tree(tmp_path, ["a"], {"a": np.array([[0, 3]], dtype=np.uint8)})
    with pytest.raises(ValueError, match=r"SegmentationClass/a\.png.*\[3\]"):
        build_label_table(root, "train")


def test_missing_mask_names_the_file(tmp_path):
    root = _tree(tmp_path, ["a", "b"], {"a": np.array([[0, 1]], dtype=np.uint8)})
    with pytest.raises(FileNotFoundError, match=r"SegmentationClass/b\.png is missing"):
        build_label_table(root, "train")


def test_a_prepared_tree_without_its_mask_folder_says_what_to_do(tmp_path):
    """No rule rebuilds a tree given with data.voc2012.prepared: true: the message says which
    folder is missing and where it comes from, not 're-run the data rule'."""
    root = _tree(tmp_path, ["a"])
    with pytest.raises(FileNotFoundError) as err:
        build_label_table(root, "train")
    message = str(err.value)
    assert f"the folder {root / 'SegmentationClass'} is missing" in message
    assert "data.voc2012.prepared: true, copy SegmentationClass/ there" in message
    (root / "ImageSets/Segmentation/train_aug.txt").write_text("a\n")
    with pytest.raises(FileNotFoundError, match=r"SegmentationClassAug \(the masks of train_aug\)"):
        build_label_table(root, "train_aug")


def test_missing_image_names_the_file(tmp_path):
    root = _tree(tmp_path, ["a"], {"a": np.array([[0, 1]], dtype=np.uint8)})
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/a\.jpg is missing"):
        build_label_table(root, "train")


def test_missing_and_empty_split(tmp_path):
    root = _tree(tmp_path, ["a"], {"a": np.array([[0, 1]], dtype=np.uint8)})
    with pytest.raises(FileNotFoundError, match=r"Segmentation/val\.txt not found"):
        build_label_table(root, "val")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="lists no images"):
        build_label_table(root, "train")


def test_duplicate_ids_in_split(tmp_path):
    root = _tree(tmp_path, ["a", "b", "a"])
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        read_split(root, "train")


def test_bad_source_is_an_error(tmp_path):
    root = _tree(tmp_path, ["a"])
    with pytest.raises(ValueError, match="masks"):
        build_label_table(root, "train", source="boxes")


VOC_XML = """<annotation>
  <filename>2007_000032.jpg</filename>
  <object><name>dog</name><difficult>0</difficult></object>
  <object><name> person </name><difficult>1</difficult></object>
  <object><name>dog</name></object>
</annotation>
"""


def test_labels_from_hand_written_voc_xml(tmp_path):
    path = tmp_path / "2007_000032.xml"
    path.write_text(VOC_XML)
    present = labels_from_voc_xml(path, VOC_CLASSES)
    assert [VOC_CLASSES[i] for i in np.flatnonzero(present)] == ["dog", "person"]
    path.write_text(VOC_XML.replace("person", "unicorn"))
    with pytest.raises(ValueError, match=r"2007_000032\.xml.*'unicorn'"):
        labels_from_voc_xml(path, VOC_CLASSES)
    path.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="cannot read annotation"):
        labels_from_voc_xml(path, VOC_CLASSES)


def test_xml_table_on_voc_tree_without_classes_txt(tmp_path):
    root = _tree(tmp_path, ["2007_000032", "2007_000033"], classes=None)
    (root / "Annotations").mkdir()
    (root / "Annotations" / "2007_000032.xml").write_text(VOC_XML)
    (root / "Annotations" / "2007_000033.xml").write_text(
        "<annotation><object><name>aeroplane</name></object></annotation>"
    )
    assert read_class_names(root) == list(VOC_CLASSES)
    table = build_label_table(root, "train", source="xml")
    assert list(table.columns[1:]) == list(VOC_CLASSES)
    assert table.iloc[0, 1:].sum() == 2 and table.loc[0, "dog"] == 1 and table.loc[0, "person"] == 1
    assert table.iloc[1, 1:].sum() == 1 and table.loc[1, "aeroplane"] == 1
    (root / "Annotations" / "2007_000033.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"Annotations/2007_000033\.xml is missing"):
        build_label_table(root, "train", source="xml")


def test_class_names_missing_outside_a_voc_tree(tmp_path):
    root = _tree(tmp_path, ["a"], classes=None)
    with pytest.raises(FileNotFoundError, match="classes.txt not found"):
        read_class_names(root)


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("image_id,cat,dog\na,1,2\n", r"image a has 2 for class 'dog'"),
        ("image_id,cat,dog\na,1,yes\n", r"image a has 'yes' for class 'dog'"),
        ("image_id,cat,dog\na,1,\n", r"label values must be 0 or 1"),
        ("id,cat,dog\na,1,0\n", r"first column must be 'image_id'"),
        ("image_id\na\n", r"no class columns"),
        ("image_id,cat\n", r"no rows"),
        ("image_id,cat\na,1\na,0\n", r"more than once: \['a'\]"),
        ("", r"cannot parse"),
    ],
)
def test_malformed_tables_are_clear_errors(tmp_path, csv, message):
    path = tmp_path / "bad.csv"
    path.write_text(csv)
    with pytest.raises(ValueError, match=message):
        read_label_table(path)


def test_missing_table_says_to_run_make_labels(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_labels"):
        read_label_table(tmp_path / "nope.csv")


def test_write_refuses_a_malformed_table(tmp_path):
    with pytest.raises(ValueError, match="0 or 1"):
        write_label_table(pd.DataFrame({"image_id": ["a"], "cat": [3]}), tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()


def test_make_labels_script(syn_root, tmp_path):
    module = load_script("data_labels")
    out = tmp_path / "labels" / "train.csv"
    argv = ["--root", str(syn_root), "--split", "train", "--source", "masks", "--out", str(out)]
    assert module.main(argv) == 0
    ids, _, labels = read_label_table(out)
    expected = build_label_table(syn_root, "train")
    assert ids == expected["image_id"].tolist()
    np.testing.assert_array_equal(labels, expected.iloc[:, 1:].to_numpy())
    bad = ["--root", str(syn_root), "--split", "test", "--source", "masks"]
    bad += ["--out", str(tmp_path / "t.csv")]
    assert module.main(bad) == 2
    assert not (tmp_path / "t.csv").exists()
