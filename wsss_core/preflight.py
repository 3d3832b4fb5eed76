"""Start-up checks that the schema cannot express: files and folders the config names, the
prepared dataset tree, the patch grid, the results folder and the methods each stage takes.

``check_run`` (called once by rules/common.smk, after the schema check) raises ``ValueError``
with one line that names the config key and says what to do, before any job runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Config = Mapping[str, Any]

# config key -> the section and key it is read from, for the weights files a run loads
WEIGHT_KEYS = (
    ("classifier.pretrained", ("classifier", "pretrained")),
    ("affinity.net.cnn_pretrained", ("affinity", "net", "cnn_pretrained")),
    ("segmenter.net.pretrained", ("segmenter", "net", "pretrained")),
)


def check_run(config: Config, results_dir: str | Path) -> None:
    """Every start-up check, in the order a user would fix them."""
    check_weight_files(config)
    check_voc_root(config)
    check_prepared_tree(config)
    check_coco_splits(config)
    check_data_folder(config)
    check_patch_sizes(config)
    check_stem_loss(config)
    check_stage_methods(config)
    check_results_writable(results_dir)


def lookup(config: Config, keys: tuple[str, ...]) -> Any:
    """``config[k0][k1]...``, None where a level is missing."""
    node: Any = config
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def check_weight_files(config: Config) -> None:
    """A weights file named in the config must exist (``false`` and ``hub`` name no file)."""
    for key, keys in WEIGHT_KEYS:
        weights = lookup(config, keys)
        if isinstance(weights, str) and weights != "hub" and not Path(weights).is_file():
            raise ValueError(
                f"config key {key}: weights file '{weights}' does not exist; "
                "give a local weights file, 'hub' (needs network) or false"
            )


def check_voc_root(config: Config) -> None:
    """The VOC archive extracts to <parent>/VOC2012, so a root the workflow prepares must end
    in VOC2012."""
    data = config["data"]
    voc = data["voc2012"]
    if data["source"] == "voc2012" and not voc["prepared"] and Path(voc["root"]).name != "VOC2012":
        raise ValueError(
            f"config key data.voc2012.root: '{voc['root']}' must end in VOC2012 (the archive "
            "extracts to <parent>/VOC2012), or set data.voc2012.prepared: true"
        )


def check_prepared_tree(config: Config) -> None:
    """``data.voc2012.prepared: true`` promises a tree the workflow only reads: the images,
    the split lists and masks of both splits (SegmentationClassAug for train_aug, see
    wsss_core.data.voc_prepare), Annotations for XML labels, and classes.txt where the tree
    cannot stand for VOC's 20 classes."""
    data = config["data"]
    voc = data["voc2012"]
    if data["source"] != "voc2012" or not voc["prepared"]:
        return
    root = Path(voc["root"])
    fix = (
        f"complete the prepared tree data.voc2012.root '{voc['root']}', point root at a "
        "complete one, or set data.voc2012.prepared: false to download and prepare it"
    )
    if not root.is_dir():
        raise ValueError(
            f"config key data.voc2012.root: '{voc['root']}' is not a folder, but "
            "data.voc2012.prepared is true; point root at a prepared VOC2012 tree or set "
            "prepared: false to download and prepare it"
        )
    for key in ("train_split", "eval_split"):
        split_file = root / "ImageSets" / "Segmentation" / f"{data[key]}.txt"
        if not split_file.is_file():
            raise ValueError(
                f"config key data.{key}: '{data[key]}' has no list {split_file} in the prepared "
                "tree data.voc2012.root; name a split that exists there or set "
                "data.voc2012.prepared: false to prepare the tree (train_aug included)"
            )
    if not (root / "JPEGImages").is_dir():
        raise ValueError(f"config key data.voc2012.root: {root / 'JPEGImages'} is missing; {fix}")
    for key in ("train_split", "eval_split"):
        split = data[key]
        folders = ["SegmentationClassAug"]
        if split != "train_aug":
            folders.insert(0, "SegmentationClass")
        if not any((root / name).is_dir() for name in folders):
            raise ValueError(
                f"config key data.{key}: split '{split}' needs its masks in "
                f"{' or '.join(str(root / name) for name in folders)}, which is missing; {fix}"
            )
    if data["label_source"] == "xml" and not (root / "Annotations").is_dir():
        raise ValueError(
            f"config key data.label_source: 'xml' reads {root / 'Annotations'}, which is "
            f"missing; use label_source: masks, or {fix}"
        )
    voc_tree = (root / "Annotations").is_dir() or (root / "SegmentationClass").is_dir()
    if not voc_tree and not (root / "classes.txt").is_file():
        raise ValueError(
            f"config key data.voc2012.root: {root / 'classes.txt'} is missing (the class names, "
            f"one per line in label order); write it, or {fix}"
        )


def check_coco_splits(config: Config) -> None:
    """prepare_coco writes the split lists train (train2014) and val (val2014), no other."""
    data = config["data"]
    if data["source"] != "coco2014":
        return
    for key in ("train_split", "eval_split"):
        if data[key] not in ("train", "val"):
            raise ValueError(
                f"config key data.{key}: '{data[key]}' is no COCO 2014 split; use train "
                "(train2014) or val (val2014)"
            )


def check_data_folder(config: Config) -> None:
    """``data.source: folder`` needs ``data.folder.path``: a folder with classes.txt, images/
    and a label table per split (its contents are checked by the rule prepare_folder)."""
    data = config["data"]
    if data["source"] != "folder":
        return
    path = lookup(config, ("data", "folder", "path"))
    layout = "classes.txt, images/ and <split>.csv (README, Your own data)"
    if path is None:
        raise ValueError(
            f"config key data.folder.path: not set, but data.source is folder; give the folder "
            f"that holds {layout}"
        )
    root = Path(path)
    if not root.is_dir():
        raise ValueError(
            f"config key data.folder.path: '{path}' is not a folder; give the folder that holds "
            f"{layout}"
        )
    needed = ["classes.txt", "images"] + [f"{data[k]}.csv" for k in ("train_split", "eval_split")]
    missing = [name for name in dict.fromkeys(needed) if not (root / name).exists()]
    if missing:
        raise ValueError(
            f"config key data.folder.path: '{path}' lacks {', '.join(missing)}; it must hold "
            f"{layout}, with a table for data.train_split and data.eval_split"
        )


def check_patch_sizes(config: Config) -> None:
    """A plain ViT classifier cuts its input into patches: classifier.img_size, and
    affinity.net.crop_size when the AffinityNet runs on the classifier, must be multiples of
    the patch size (classifier.patch_size, else the timm model's). Hybrids pass: their CNN
    stem makes the tokens (hybrid_tiny's stride is checked when it is built)."""
    cls = config["classifier"]
    if cls["backbone"] == "hybrid_tiny":
        return  # nothing to check: spare the start-up the import of torch
    try:
        from wsss_core.classifier.model import ClassifierConfigError, check_patch_multiple
    except ImportError:
        return  # Snakemake's own environment has no torch (--use-conda): the rules check
    sizes = [("classifier.img_size", cls["img_size"])]
    net = config["affinity"]["net"]
    if net.get("backbone", "classifier") == "classifier" and net.get("crop_size") is not None:
        sizes.append(("affinity.net.crop_size", net["crop_size"]))
    try:
        for key, size in sizes:
            check_patch_multiple(cls, size, key)
    except ClassifierConfigError as err:
        raise ValueError(str(err)) from None


def check_stem_loss(config: Config) -> None:
    """classifier.stem_loss supervises a convolutional stem: only hybrids have one."""
    cls = config["classifier"]
    if not cls.get("stem_loss") or cls["backbone"] == "hybrid_tiny":
        return
    try:
        from wsss_core.classifier.model import is_hybrid_backbone
    except ImportError:
        return  # Snakemake's own environment has no torch (--use-conda): the rule checks
    if not is_hybrid_backbone(cls["backbone"]):
        raise ValueError(
            f"config key classifier.stem_loss: {cls['backbone']} is a plain ViT without a "
            "convolutional stem to supervise; set classifier.stem_loss to 0"
        )


def check_stage_methods(config: Config) -> None:
    """Seeds are made from extracted relevance maps, and the segmenter learns from seeds."""
    cams, seeds = config["cams"]["methods"], config["seeds"]["methods"]
    for method in seeds:
        if method not in cams:
            raise ValueError(
                f"config key seeds.methods: '{method}' is not among cams.methods {cams}; "
                "add it there or pick one of them"
            )
    pseudo = config["segmenter"]["pseudo_method"]
    if pseudo not in seeds:
        raise ValueError(
            f"config key segmenter.pseudo_method: '{pseudo}' is not among seeds.methods {seeds}"
        )


def check_results_writable(results_dir: str | Path) -> None:
    """Everything a run writes goes under results/<run>: it (or, before the first run, its
    nearest existing parent) must be a folder this user can write into."""
    probe = Path(results_dir)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        problem = f"{probe} is not a folder"
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"no write permission on {probe}"
    else:
        return
    raise ValueError(
        f"{results_dir} is not writable ({problem}); fix its permissions or choose another run "
        "name (config key run)"
    )
