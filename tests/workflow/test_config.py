"""The config: the schema lists exactly the keys the code reads, every config file passes it and
the code's own checks, and a bad config stops before anything runs with a line naming the key
(dry runs, about a second each; nothing is ever run)."""

from __future__ import annotations

from dataclasses import fields

import pytest
from jsonschema.validators import validator_for
from workflow_utils import (
    COCO_PRESET,
    REPO,
    TINY_CONFIG,
    VOC_PRESET,
    load_yaml,
    output,
    run_config,
    snakemake,
    tail,
    with_values,
    write_config,
)

SCHEMA = REPO / "schemas" / "config.schema.yaml"

# Keys of the classifier section that the model and input code read (wsss_core.classifier.model,
# workflow_scripts/classifier_train.py); the training keys are TrainConfig's fields.
CLASSIFIER_MODEL_KEYS = {
    "backbone", "img_size", "patch_size", "pretrained", "num_classes", "dynamic_img_size",
    "drop_path_rate", "mean", "std", "scale_range", "jitter",
}  # fmt: skip


# ============================================================ the schema (no Snakemake run)


def schema_section(*keys: str) -> dict:
    node = load_yaml(SCHEMA)
    for key in keys:
        node = node["properties"][key]
    return node


def schema_objects(node, path="") -> list[tuple[str, dict]]:
    """Every object schema (``type: object``) in ``node``, with where it is."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((path or "(top level)", node))
        for key, value in node.items():
            found += schema_objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += schema_objects(value, f"{path}/{i}")
    return found


def test_schema_lists_exactly_the_keys_the_code_reads():
    """The free-form sections (classifier, affinity.net, segmenter.net) name every key their
    code reads and no other, so a typo or a wrong type stops the run at start-up instead of
    being ignored or failing an hour later in a training job."""
    from wsss_core.affinity.net import AffinityNetConfig
    from wsss_core.affinity.train import AffinityTrainConfig
    from wsss_core.classifier.train import TrainConfig as ClassifierTrainConfig
    from wsss_core.segmenter.model import SegmenterConfig
    from wsss_core.segmenter.train import TrainConfig as SegmenterTrainConfig

    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    assert set(schema_section("classifier")["properties"]) == (
        names(ClassifierTrainConfig) | CLASSIFIER_MODEL_KEYS
    )
    # freeze_backbone is derived (backbone_lr_mult == 0), num_classes comes from the data,
    # classifier_config from the classifier file
    assert set(schema_section("affinity", "net")["properties"]) == (
        names(AffinityNetConfig) - {"freeze_backbone"}
    ) | names(AffinityTrainConfig)
    assert set(schema_section("segmenter", "net")["properties"]) == (
        names(SegmenterConfig) - {"num_classes", "classifier_config"}
    ) | names(SegmenterTrainConfig)


def test_schema_rejects_unknown_keys_everywhere():
    """Every object of the schema closes its key set (``additionalProperties: false``), except
    resources.rules, whose keys are rule names with a schema of their own."""
    open_objects = [
        path
        for path, node in schema_objects(load_yaml(SCHEMA))
        if node.get("additionalProperties") is not False
    ]
    assert open_objects == ["/properties/resources/properties/rules"]
    rules = schema_section("resources", "rules")["additionalProperties"]
    assert rules == {"$ref": "#/$defs/rule_resources"}


@pytest.mark.parametrize("configfile", [None, TINY_CONFIG, VOC_PRESET, COCO_PRESET])
def test_config_files_match_the_schema(configfile):
    """config.yaml alone and each preset on top of it (as Snakemake merges them) are valid."""
    config = run_config(REPO, configfile)
    schema = load_yaml(SCHEMA)
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator_for(schema)(schema).iter_errors(config)
    ]
    assert errors == []


@pytest.mark.parametrize("configfile", [None, TINY_CONFIG, VOC_PRESET, COCO_PRESET])
def test_config_sections_pass_the_codes_own_checks(configfile):
    """The training sections of config.yaml and each preset, with the schema's defaults filled
    in as the rules pass them, are accepted by the parsers their rules call (which reject
    unknown keys or bad values only when the job starts)."""
    from snakemake.utils import validate

    from wsss_core.affinity.train import split_config
    from wsss_core.classifier.train import TrainConfig
    from wsss_core.segmenter.train import parse_config

    config = run_config(REPO, configfile)
    validate(config, str(SCHEMA), set_default=True)
    TrainConfig.from_dict(config["classifier"])
    split_config(config["affinity"]["net"])
    parse_config(config["segmenter"]["net"], num_classes=21)


BAD_CONFIGS = {
    # id: (changes to the tiny config, what the message must say)
    "wrong_type": (
        {"classifier.epochs": "ten"},
        ["config key classifier.epochs: 'ten' is not of type 'integer'"],
    ),
    "unknown_key": (
        {"cams.methodz": ["rollout"]},
        ["config key cams.methodz: unknown key (known keys under cams: eval, flip, methods,"],
    ),
    "unknown_cams_method": (
        {"cams.methods": ["transformer_attribution", "gradcam_pp"]},
        ["config key cams.methods[1]: 'gradcam_pp' is not one of ['transformer_attribution',"],
    ),
    "missing_voc_root": (
        {
            "data.source": "voc2012",
            "data.voc2012.prepared": True,
            "data.voc2012.root": "nowhere/VOC2012",
        },
        ["config key data.voc2012.root: 'nowhere/VOC2012' is not a folder"],
    ),
    "prepared_root_without_split_list": (
        {
            "data.source": "voc2012",
            "data.voc2012.prepared": True,
            "data.voc2012.root": "{tmp}/VOC2012",  # has ImageSets/Segmentation/val.txt only
            "data.train_split": "train_aug",
        },
        ["config key data.train_split: 'train_aug' has no list", "train_aug.txt"],
    ),
    "missing_classifier_weights": (
        {"classifier.pretrained": "weights/vit_base_patch16_224.safetensors"},
        ["config key classifier.pretrained: weights file", "does not exist"],
    ),
    "missing_affinity_cnn_weights": (
        {"affinity.net": {"backbone": "resnet18", "cnn_pretrained": "weights/resnet18.pth"}},
        ["config key affinity.net.cnn_pretrained: weights file 'weights/resnet18.pth'"],
    ),
    "unknown_affinity_net_key": (
        {"affinity.net": {"epoch": 2}},
        ["config key affinity.net.epoch: unknown key"],
    ),
    "segmenter_net_bad_value": (
        {"segmenter.net": {"output_stride": 32}},
        ["config key segmenter.net.output_stride: 32 is not one of [8, 16]"],
    ),
    "unknown_synthetic_style": (
        {"data.synthetic.style": "photos"},
        ["config key data.synthetic.style: 'photos' is not one of ['shapes', 'scenes']"],
    ),
    "zero_shards": (
        {"walk.shards": 0},
        ["config key walk.shards: 0 is less than the minimum of 1"],
    ),
    "two_errors_at_once": (
        {"seed": -1, "report.num_val_samples": "4"},
        [
            "config key report.num_val_samples: '4' is not of type 'integer'",
            "config key seed: -1 is less than the minimum of 0",
        ],
    ),
    "pseudo_method_not_extracted": (
        {"seeds.methods": ["rollout", "full_lrp"]},
        ["config key seeds.methods: 'full_lrp' is not among cams.methods"],
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_stops_before_anything_runs(case, dry_workdir, tmp_path):
    """``snakemake -n`` with a bad config exits non-zero with one short line per problem that
    starts with the config key (not Snakemake's dump of the schema), before building the DAG."""
    changes, expected = BAD_CONFIGS[case]
    voc = tmp_path / "VOC2012" / "ImageSets" / "Segmentation"
    voc.mkdir(parents=True)
    (voc / "val.txt").write_text("2007_000033\n")
    changes = {
        k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v
        for k, v in changes.items()
    }
    config = with_values(load_yaml(dry_workdir / TINY_CONFIG), changes)
    configfile = write_config(dry_workdir, f"bad/{case}.yaml", config)
    proc = snakemake(dry_workdir, "-n", "--configfile", configfile, timeout=120)
    text = output(proc)
    assert proc.returncode != 0, tail(text)
    for line in expected:
        assert line in text, tail(text)
    assert "Failed validating" not in text  # the concise message, not the schema dump
    assert "Building DAG of jobs" not in text


def test_the_bad_configs_differ_from_a_good_one_only_in_their_keys(dry_workdir):
    """The base of the bad configs (the tiny config) passes the same dry run."""
    proc = snakemake(dry_workdir, "-n", "--configfile", TINY_CONFIG, timeout=120)
    assert proc.returncode == 0, tail(output(proc))


def test_config_errors_name_every_key_at_once(tmp_path):
    """wsss_core.config (what rules/common.smk runs first): one line per problem, each starting
    with the dotted config key; the renamed sections' old keys are unknown keys."""
    from wsss_core.config import config_errors, config_key

    assert config_key(["cams", "methods", 1]) == "cams.methods[1]"
    assert config_key([]) == "(top level)"
    config = run_config(REPO, TINY_CONFIG)
    assert config_errors(config, SCHEMA) == []
    config["random_walk"] = config.pop("walk")
    config["affinity"]["methods"] = config["seeds"]["methods"]
    errors = config_errors(config, SCHEMA)
    assert any(e.startswith("config key affinity.methods: unknown key") for e in errors), errors
    assert any(e.startswith("config key random_walk: unknown key") for e in errors), errors
    assert "config key walk: missing (required under (top level))" in errors
