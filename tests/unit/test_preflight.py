"""Start-up checks (wsss_core.preflight): each bad input gives one line that names the config
key and says what to do; a good config passes every check."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from workflow_utils import COCO_PRESET, REPO, TINY_CONFIG, VOC_PRESET, run_config

from wsss_core import preflight


@pytest.fixture(scope="module")
def tiny() -> dict:
    return run_config(REPO, TINY_CONFIG)


@pytest.fixture(scope="module")
def voc() -> dict:
    return run_config(REPO, VOC_PRESET)


def prepared_tree(root: Path, splits=("train", "val"), masks=("SegmentationClass",)) -> Path:
    for name in ("JPEGImages", "Annotations", *masks):
        (root / name).mkdir(parents=True, exist_ok=True)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (lists / f"{split}.txt").write_text("a\n")
    return root


def prepared(voc_config: dict, root: Path, **data) -> dict:
    config = copy.deepcopy(voc_config)
    config["data"]["voc2012"].update(prepared=True, root=str(root))
    config["data"].update(data)
    return config


def test_good_configs_pass(tiny, voc, tmp_path):
    preflight.check_run(tiny, tmp_path / "results" / "tiny")
    preflight.check_run(voc, tmp_path / "results" / "voc")
    root = prepared_tree(tmp_path / "VOC2012")
    preflight.check_run(prepared(voc, root, train_split="train"), tmp_path / "r")


def test_the_coco_preset_passes_and_names_a_split_it_lacks(tmp_path):
    coco = run_config(REPO, COCO_PRESET)
    preflight.check_run(coco, tmp_path / "results" / "coco")
    config = copy.deepcopy(coco)
    config["data"]["train_split"] = "train_aug"
    with pytest.raises(
        ValueError, match=r"^config key data\.train_split: 'train_aug' is no COCO 2014 split"
    ):
        preflight.check_run(config, tmp_path / "results" / "coco")


def test_missing_weights_file_names_its_key(tiny):
    config = copy.deepcopy(tiny)
    config["segmenter"]["net"]["pretrained"] = "nowhere/resnet.pth"
    with pytest.raises(ValueError, match=r"^config key segmenter\.net\.pretrained: weights file"):
        preflight.check_weight_files(config)
    config["segmenter"]["net"]["pretrained"] = "hub"  # no file: fetched by timm
    preflight.check_weight_files(config)


def test_voc_root_must_end_in_voc2012(voc):
    config = copy.deepcopy(voc)
    config["data"]["voc2012"]["root"] = "data/voc"
    with pytest.raises(ValueError, match=r"^config key data\.voc2012\.root: 'data/voc' must end"):
        preflight.check_voc_root(config)
    config["data"]["voc2012"]["prepared"] = True  # a prepared tree may live anywhere
    preflight.check_voc_root(config)


@pytest.mark.parametrize(
    "remove, key, says",
    [
        ("", "data.voc2012.root", "is not a folder"),
        ("ImageSets/Segmentation/val.txt", "data.eval_split", "'val' has no list"),
        ("JPEGImages", "data.voc2012.root", "JPEGImages is missing"),
        ("SegmentationClass", "data.train_split", "split 'train' needs its masks"),
        ("Annotations", "data.label_source", "'xml' reads"),
    ],
)
def test_incomplete_prepared_tree_names_what_is_missing(voc, tmp_path, remove, key, says):
    root = prepared_tree(tmp_path / "VOC2012")
    target = root / remove if remove else root
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        target.rmdir()
    else:
        target.unlink()
    config = prepared(voc, root, train_split="train", label_source="xml")
    with pytest.raises(ValueError) as err:
        preflight.check_prepared_tree(config)
    line = str(err.value)
    assert line.startswith(f"config key {key}: ") and says in line, line
    assert "\n" not in line


def test_train_aug_masks_come_from_segmentationclassaug(voc, tmp_path):
    root = prepared_tree(tmp_path / "VOC2012", splits=("train_aug", "val"))
    config = prepared(voc, root, train_split="train_aug")
    with pytest.raises(ValueError, match=r"split 'train_aug' needs its masks in \S*Aug, which"):
        preflight.check_prepared_tree(config)
    (root / "SegmentationClassAug").mkdir()
    preflight.check_prepared_tree(config)


def test_a_tree_without_voc_folders_needs_class_names(voc, tmp_path):
    root = prepared_tree(tmp_path / "VOC2012", masks=("SegmentationClassAug",))
    (root / "Annotations").rmdir()
    config = prepared(voc, root, train_split="train")
    with pytest.raises(ValueError, match="classes.txt is missing"):
        preflight.check_prepared_tree(config)
    (root / "classes.txt").write_text("cat\ndog\n")
    preflight.check_prepared_tree(config)


def test_patch_grid(voc):
    config = copy.deepcopy(voc)
    config["classifier"]["img_size"] = 440  # not a multiple of 16
    with pytest.raises(ValueError, match=r"classifier\.img_size"):
        preflight.check_patch_sizes(config)


def test_stem_loss_needs_a_hybrid(voc, tiny):
    config = copy.deepcopy(voc)  # vit_base_patch16_224
    config["classifier"]["stem_loss"] = 1.0
    with pytest.raises(ValueError, match=r"^config key classifier\.stem_loss: vit_base_patch16"):
        preflight.check_stem_loss(config)
    config["classifier"]["stem_loss"] = 0.0
    preflight.check_stem_loss(config)
    config = copy.deepcopy(voc)
    config["classifier"].update(backbone="vit_base_r50_s16_384", stem_loss=1.0)
    preflight.check_stem_loss(config)  # timm's R50 hybrid has a stem
    config = copy.deepcopy(tiny)
    config["classifier"]["stem_loss"] = 1.0
    preflight.check_stem_loss(config)


def test_stage_methods(tiny):
    config = copy.deepcopy(tiny)
    config["seeds"]["methods"] = [*config["cams"]["methods"], "not_extracted"]
    with pytest.raises(ValueError, match="^config key seeds.methods: 'not_extracted' is not"):
        preflight.check_stage_methods(config)
    config = copy.deepcopy(tiny)
    config["segmenter"]["pseudo_method"] = "elsewhere"
    with pytest.raises(ValueError, match="^config key segmenter.pseudo_method: 'elsewhere'"):
        preflight.check_stage_methods(config)


def test_results_folder_must_be_writable(tmp_path):
    preflight.check_results_writable(tmp_path / "new" / "run")  # nearest parent is writable
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"is not writable \(\S*file is not a folder\)"):
        preflight.check_results_writable(tmp_path / "file" / "run")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="no write permission"):
            preflight.check_results_writable(locked / "run")


def test_a_folder_source_needs_its_folder(tiny, tmp_path):
    config = copy.deepcopy(tiny)
    config["data"]["source"] = "folder"
    config["data"]["folder"] = {"path": None}
    with pytest.raises(ValueError, match="config key data.folder.path: not set"):
        preflight.check_data_folder(config)
    config["data"]["folder"]["path"] = str(tmp_path / "mine")
    with pytest.raises(ValueError, match="is not a folder"):
        preflight.check_data_folder(config)
    (tmp_path / "mine" / "images").mkdir(parents=True)
    (tmp_path / "mine" / "classes.txt").write_text("cat\n")
    (tmp_path / "mine" / "train.csv").write_text("image,cat\na,1\n")
    with pytest.raises(ValueError, match="lacks val.csv"):
        preflight.check_data_folder(config)
    (tmp_path / "mine" / "val.csv").write_text("image,cat\nb,1\n")
    preflight.check_data_folder(config)
