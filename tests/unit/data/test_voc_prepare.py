"""SBD .mat conversion, train_aug arithmetic and VOC/SBD preparation on tiny fake trees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from voc_miniature import Miniature, sbd_tgz, voc_tar, write_sbd_mat, write_sbd_tree, write_voc_tree
from workflow_utils import load_script

from wsss_core.data.download import EXTRACTION_STAMP, is_extracted
from wsss_core.data.palette import load_mask
from wsss_core.data.voc_prepare import (
    VOC_CLASSES,
    mask_dir_for_split,
    prepare_voc,
    read_split,
    sbd_mat_to_png,
    train_aug_ids,
)

VOC_TRAIN = ["2007_000001", "2007_000002"]
VOC_VAL = ["2007_000003", "2008_000004"]
SBD_TRAIN = ["2007_000002", "2008_000004", "2008_000005"]
SBD_VAL = ["2008_000006", "2007_000001"]
H, W = 5, 6
MINI = Miniature(
    voc_train=tuple(VOC_TRAIN),
    voc_val=tuple(VOC_VAL),
    sbd_train=tuple(SBD_TRAIN),
    sbd_val=tuple(SBD_VAL),
    size=(H, W),
)
ALL_IDS = MINI.all_ids
# (SBD train + SBD val + VOC train) - VOC val, by hand
EXPECTED_TRAIN_AUG = ["2007_000001", "2007_000002", "2008_000005", "2008_000006"]


def make_voc(root: Path) -> Path:
    return write_voc_tree(root, MINI)


def make_sbd(root: Path) -> Path:
    return write_sbd_tree(root, MINI)


def test_sbd_mat_to_png_reads_gtcls_segmentation(tmp_path):
    seg = np.array([[0, 3, 3], [20, 255, 0]], np.uint8)
    write_sbd_mat(tmp_path / "a.mat", seg)
    out = sbd_mat_to_png(tmp_path / "a.mat")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, seg)


def test_sbd_mat_errors_name_the_file(tmp_path):
    scipy.io.savemat(tmp_path / "other.mat", {"GTinst": {"Segmentation": np.zeros((2, 2))}})
    with pytest.raises(ValueError, match=r"other\.mat has no GTcls\.Segmentation"):
        sbd_mat_to_png(tmp_path / "other.mat")
    write_sbd_mat(tmp_path / "labels.mat", np.array([[0, 21]], np.uint8))
    with pytest.raises(ValueError, match=r"labels\.mat: labels \[21\] outside 0\.\.20"):
        sbd_mat_to_png(tmp_path / "labels.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match=r"junk\.mat"):
        sbd_mat_to_png(tmp_path / "junk.mat")


def test_train_aug_arithmetic():
    assert train_aug_ids(VOC_TRAIN, VOC_VAL, SBD_TRAIN, SBD_VAL) == EXPECTED_TRAIN_AUG
    assert train_aug_ids(["b", "a"], ["c"]) == ["a", "b"]
    # VOC val always wins, even for ids in every other list
    assert train_aug_ids(["x"], ["x"], ["x"], ["x"]) == []


def test_mask_dir_for_split(tmp_path):
    assert mask_dir_for_split(tmp_path, "train_aug") == tmp_path / "SegmentationClassAug"
    assert mask_dir_for_split(tmp_path, "train") == tmp_path / "SegmentationClass"
    assert mask_dir_for_split(tmp_path, "val") == tmp_path / "SegmentationClass"


def check_prepared(voc: Path) -> None:
    assert read_split(voc / "ImageSets/Segmentation/train_aug.txt") == EXPECTED_TRAIN_AUG
    assert (voc / "classes.txt").read_text().split() == list(VOC_CLASSES)
    aug = voc / "SegmentationClassAug"
    assert sorted(p.stem for p in aug.iterdir()) == ALL_IDS
    for image_id in ALL_IDS:
        in_voc = image_id in VOC_TRAIN + VOC_VAL
        expected = MINI.voc_mask(image_id) if in_voc else MINI.sbd_mask(image_id)
        np.testing.assert_array_equal(load_mask(aug / f"{image_id}.png"), expected)
        with Image.open(aug / f"{image_id}.png") as image:
            assert image.mode == "P"
    # VOC masks are byte-for-byte copies
    for image_id in VOC_TRAIN:
        copied = (aug / f"{image_id}.png").read_bytes()
        assert copied == (voc / "SegmentationClass" / f"{image_id}.png").read_bytes()


def test_prepare_voc_with_sbd(tmp_path):
    voc = make_voc(tmp_path / "VOC2012")
    sbd = make_sbd(tmp_path / "SBD")
    prepared = prepare_voc(voc, sbd, progress=False)
    assert prepared.train_aug == EXPECTED_TRAIN_AUG
    assert (prepared.n_voc_masks, prepared.n_sbd_masks) == (4, 2)
    check_prepared(voc)
    # no temporary folders or files left beside the outputs
    assert not [p for p in voc.rglob(".*")]


def test_prepare_voc_without_sbd_is_voc_train(tmp_path):
    voc = make_voc(tmp_path / "VOC2012")
    prepared = prepare_voc(voc, None, progress=False)
    assert prepared.train_aug == VOC_TRAIN
    assert read_split(voc / "ImageSets/Segmentation/train_aug.txt") == VOC_TRAIN
    assert sorted(p.stem for p in (voc / "SegmentationClassAug").iterdir()) == sorted(
        VOC_TRAIN + VOC_VAL
    )
    assert prepared.n_sbd_masks == 0


def test_missing_split_file_is_named(tmp_path):
    voc = make_voc(tmp_path / "VOC2012")
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Segmentation/val\.txt is missing"):
        prepare_voc(voc, progress=False)
    with pytest.raises(FileNotFoundError, match="VOCdevkit/VOC2012"):
        prepare_voc(tmp_path / "nowhere", progress=False)


def test_missing_sbd_mask_is_named_and_nothing_is_half_written(tmp_path):
    voc = make_voc(tmp_path / "VOC2012")
    sbd = make_sbd(tmp_path / "SBD")
    (sbd / "cls" / "2008_000006.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"cls/2008_000006\.mat is missing"):
        prepare_voc(voc, sbd, progress=False)
    assert not (voc / "SegmentationClassAug").exists()
    assert not (voc / "ImageSets/Segmentation/train_aug.txt").exists()
    assert not [p for p in voc.glob(".*")]


def test_missing_image_and_size_mismatch_are_errors(tmp_path):
    voc = make_voc(tmp_path / "VOC2012")
    sbd = make_sbd(tmp_path / "SBD")
    (voc / "JPEGImages" / "2008_000005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2008_000005"):
        prepare_voc(voc, sbd, progress=False)
    Image.new("RGB", (W + 1, H)).save(voc / "JPEGImages" / "2008_000005.jpg")
    with pytest.raises(ValueError, match=r"2008_000005\.mat: mask is 6x5 but .* is 7x5"):
        prepare_voc(voc, sbd, progress=False)


def test_foreign_classes_file_is_refused(tmp_path):
    voc = make_voc(tmp_path / "VOC2012")
    (voc / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match=r"classes\.txt lists \['cat', 'dog'\]"):
        prepare_voc(voc, progress=False)


def test_prepare_voc_script_from_archives(tmp_path, capsys):
    voc = voc_tar(tmp_path / "VOCtrainval_11-May-2012.tar", MINI)
    sbd = sbd_tgz(tmp_path / "benchmark.tgz", MINI)
    main = load_script("data_prepare_voc").main
    out = tmp_path / "data"
    args = ["--voc-archive", str(voc), "--sbd-archive", str(sbd), "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    check_prepared(out / "VOC2012")
    assert sorted(p.name for p in (out / "SBD").iterdir()) == [
        EXTRACTION_STAMP,
        "cls",
        "img",
        "inst",
        "train.txt",
        "val.txt",
    ]
    assert is_extracted(voc, out / "VOC2012", "VOCdevkit/VOC2012")
    assert is_extracted(sbd, out / "SBD", "benchmark_RELEASE/dataset")
    # a second run reuses the extractions (a file added to them survives) with the same result
    (out / "SBD" / "kept.txt").write_text("reused\n")
    assert main([*args, "--no-progress"]) == 0
    check_prepared(out / "VOC2012")
    assert (out / "SBD" / "kept.txt").is_file()
    # a missing archive is one line naming it and exit code 2, not a traceback
    capsys.readouterr()
    missing = ["--voc-archive", str(tmp_path / "absent.tar"), "--out", str(tmp_path / "other")]
    assert main(missing) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("data_prepare_voc: error: archive ")
        and "absent.tar not found" in err[-1]
    )


def test_a_folder_that_merely_exists_is_no_extraction(tmp_path):
    """Snakemake creates the parent folders of a rule's outputs before the rule runs: a root
    holding only ImageSets/Segmentation (or an extraction of another archive) is extracted
    again, not taken for a finished extraction (issue 13)."""
    voc = voc_tar(tmp_path / "VOCtrainval_11-May-2012.tar", MINI)
    out = tmp_path / "data"
    (out / "VOC2012" / "ImageSets" / "Segmentation").mkdir(parents=True)
    main = load_script("data_prepare_voc").main
    assert main(["--voc-archive", str(voc), "--out", str(out), "--no-progress"]) == 0
    assert read_split(out / "VOC2012/ImageSets/Segmentation/train_aug.txt") == VOC_TRAIN
    # the stamp names the archive: another archive (here: another size) is extracted again
    stamp = out / "VOC2012" / EXTRACTION_STAMP
    identity = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**identity, "size": identity["size"] + 1}))
    (out / "VOC2012" / "JPEGImages" / f"{VOC_TRAIN[0]}.jpg").unlink()
    assert not is_extracted(voc, out / "VOC2012", "VOCdevkit/VOC2012")
    assert main(["--voc-archive", str(voc), "--out", str(out), "--no-progress"]) == 0
    assert (out / "VOC2012" / "JPEGImages" / f"{VOC_TRAIN[0]}.jpg").is_file()
    assert is_extracted(voc, out / "VOC2012", "VOCdevkit/VOC2012")
