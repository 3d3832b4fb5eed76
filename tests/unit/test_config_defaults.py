"""Each setting named once: every config key has its default and its own description in
schemas/config.schema.yaml, the library's config dataclasses take theirs from it, and
Snakemake's validate fills it into a section that lacks the key."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import Any

import pytest
from snakemake.utils import validate

from wsss_core.affinity.net import AffinityNetConfig
from wsss_core.affinity.train import AffinityTrainConfig
from wsss_core.classifier.train import TrainConfig as ClassifierTrainConfig
from wsss_core.config import (
    SCHEMA_FILE,
    fill_defaults,
    load_schema,
    resolve,
    schema_default,
    schema_node,
    section_defaults,
)
from wsss_core.seeds.crf import CRFParams
from wsss_core.segmenter.model import SegmenterConfig
from wsss_core.segmenter.train import TrainConfig as SegmenterTrainConfig
from wsss_core.walk.walk import WalkParams

# each config dataclass, the section its fields are keys of, and its fields that are no keys
DATACLASSES = [
    (ClassifierTrainConfig, "classifier", set()),
    (AffinityNetConfig, "affinity.net", {"freeze_backbone"}),  # from backbone_lr_mult
    (AffinityTrainConfig, "affinity.net", set()),
    (SegmenterConfig, "segmenter.net", {"num_classes", "classifier_config"}),  # data, classifier
    (SegmenterTrainConfig, "segmenter.net", set()),
    (CRFParams, "seeds.crf", set()),
    (CRFParams, "walk.crf", set()),
    (CRFParams, "segmenter.inference.crf", set()),
    (WalkParams, "walk", set()),
]


def leaves(node: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> dict[str, dict]:
    """Every leaf key of ``node`` (dotted) -> its schema as written there; ``<rule>`` stands for
    the free-form keys of resources.rules. An object whose keys the schema lists is no leaf."""
    found: dict[str, dict] = {}
    for name, child in node.get("properties", {}).items():
        target = resolve(child, schema)
        if "properties" in target or isinstance(target.get("additionalProperties"), dict):
            found |= leaves(target, schema, f"{prefix}{name}.")
        else:
            found[f"{prefix}{name}"] = child
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        found |= leaves(resolve(extra, schema), schema, f"{prefix}<rule>.")
    return found


def plain(value: Any) -> Any:
    """Tuples as lists, as the schema (JSON) writes them."""
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


SCHEMA = load_schema()
LEAVES = leaves(SCHEMA, SCHEMA)


def test_the_schema_is_found_beside_the_package():
    assert SCHEMA_FILE.is_file()
    assert {"run", "segmenter.net.epochs", "walk.crf.iterations"} <= set(LEAVES)
    assert "resources.rules.<rule>.mem_mb" in LEAVES


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_every_key_has_a_default_and_a_description(key):
    node = LEAVES[key]
    assert "default" in node, f"config key {key} has no default in {SCHEMA_FILE.name}"
    description = node.get("description") or resolve(node, SCHEMA).get("description")
    assert description and "\n" not in description.strip(), f"{key}: no one-line description"


def test_every_key_has_its_own_description():
    """No description was copied onto a neighbour: within a section, each key says its own
    (the CRF keys, written once in $defs, repeat across the three CRF sections)."""
    by_section: dict[str, list[str]] = {}
    for key, node in LEAVES.items():
        section = key.rsplit(".", 1)[0] if "." in key else ""
        by_section.setdefault(section, []).append(node["description"])
    copied = {s: [d for d, n in Counter(ds).items() if n > 1] for s, ds in by_section.items()}
    assert {s: d for s, d in copied.items() if d} == {}


@pytest.mark.parametrize(
    ("cls", "section", "not_keys"),
    DATACLASSES,
    ids=[f"{c.__name__}-{s}" for c, s, _ in DATACLASSES],
)
def test_dataclass_defaults_are_the_schemas(cls, section, not_keys):
    """Every field of a config dataclass is a key of its section, and its default is the
    schema's (written once: the dataclass reads it from the schema)."""
    for field in dataclasses.fields(cls):
        if field.name in not_keys:
            continue
        key = f"{section}.{field.name}"
        assert key in LEAVES, f"{cls.__name__}.{field.name}: no config key {key}"
        assert plain(field_default(field)) == schema_default(key), key
        assert type(plain(field_default(field))) is type(schema_default(key)), key


def test_mutable_defaults_are_fresh_copies():
    first, second = SegmenterTrainConfig(), SegmenterTrainConfig()
    first.mean.append(0.0)
    assert second.mean == schema_default("segmenter.net.mean")
    assert schema_default("segmenter.net.mean") is not schema_default("segmenter.net.mean")


def test_lookups_name_the_key():
    assert section_defaults("walk")["beta"] == schema_default("walk.beta")
    assert "$ref" in schema_node("seeds.crf")  # as written there
    with pytest.raises(KeyError, match="walk.betta is not a config key"):
        schema_default("walk.betta")
    with pytest.raises(KeyError, match="config key affinity.net has no default"):
        schema_default("affinity.net")


def test_snakemake_validate_fills_in_a_missing_key(tmp_path):
    """A section that lacks a key gets the schema's default from Snakemake's validate (what
    rules/common.smk runs), here for nested training keys and the CRF shared through $defs;
    the keys it sets keep their values. fill_defaults gives the same for one section."""
    config = copy.deepcopy(
        {
            "data": {"synthetic": {}, "voc2012": {}},
            "classifier": {"epochs": 3},
            "cams": {"eval": {}},
            "seeds": {"crf": {"iterations": 5}},
            "affinity": {"net": {"output_stride": 4}},
            "walk": {},
            "segmenter": {"net": {"epochs": 6}, "inference": {}},
            "report": {},
            "resources": {"rules": {"crf_seeds": {"mem_mb": 8000}}},
        }
    )
    given = copy.deepcopy(config)
    validate(config, str(SCHEMA_FILE), set_default=True)
    assert config["segmenter"]["net"]["epochs"] == 6  # set: kept
    assert config["segmenter"]["net"]["batch_size"] == SegmenterTrainConfig().batch_size == 16
    assert config["affinity"]["net"]["output_stride"] == 4
    assert config["affinity"]["net"]["taps"] == []
    assert config["affinity"]["net"]["crop_size"] is None
    assert config["classifier"]["epochs"] == 3
    assert config["classifier"]["momentum"] == ClassifierTrainConfig().momentum
    assert config["seeds"]["crf"] == {**CRFParams().to_dict(), "iterations": 5}
    assert config["walk"]["crf"] == CRFParams().to_dict()  # the section itself was missing
    assert config["walk"]["beta"] == WalkParams().beta
    assert config["segmenter"]["inference"]["crf"] == CRFParams().to_dict()
    filled_rule = {"gpu": False, "mem_mb": 8000, "runtime": None, "threads": None}
    assert config["resources"]["rules"] == {"crf_seeds": filled_rule}
    assert config["run"] == "demo"
    for section in ("classifier", "affinity.net", "segmenter.net", "walk", "seeds"):
        node_given, node_filled = given, config
        for part in section.split("."):
            node_given, node_filled = node_given[part], node_filled[part]
        assert fill_defaults(node_given, section) == node_filled, section
