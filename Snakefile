# wsss: weakly-supervised semantic segmentation from image-level labels.
# Stages: data -> classifier -> relevance maps -> CRF seeds -> AffinityNet -> random walk
#         -> segmenter -> tables and report. See README.md and ../shared/DESIGN.md.

from pathlib import Path

import yaml
from jsonschema.validators import validator_for
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


CONFIG_SCHEMA = "schemas/config.schema.yaml"


def config_key(path) -> str:
    """The dotted name of a config key from a JSON-schema path: ['cams', 'methods', 1] ->
    'cams.methods[1]'."""
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def config_errors(cfg: dict, schema_file: Path) -> list[str]:
    """Every violation of the schema, one line each, starting with the config key it is about.

    snakemake.utils.validate stops at the first error and prints the whole schema section;
    this lists them all, names unknown and missing keys, and quotes the schema's description
    of the expected value where it has one."""
    schema = yaml.safe_load(schema_file.read_text())
    validator = validator_for(schema)(schema)
    lines = []
    for err in sorted(validator.iter_errors(cfg), key=lambda e: config_key(e.absolute_path)):
        where = config_key(err.absolute_path)
        prefix = "" if where == "(top level)" else f"{where}."
        if err.validator == "additionalProperties" and err.validator_value is False:
            known = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(known)):
                lines.append(
                    f"config key {prefix}{key}: unknown key (known keys under {where}: "
                    f"{', '.join(known)})"
                )
        elif err.validator == "required" and isinstance(err.instance, dict):
            for key in err.validator_value:
                if key not in err.instance:
                    lines.append(f"config key {prefix}{key}: missing (required under {where})")
        else:
            expected = err.schema.get("description") if isinstance(err.schema, dict) else None
            hint = f" (expected: {expected})" if expected else ""
            lines.append(f"config key {where}: {err.message}{hint}")
    return lines


_config_errors = config_errors(config, Path(workflow.basedir) / CONFIG_SCHEMA)
if _config_errors:
    raise ValueError(
        f"the config does not match {CONFIG_SCHEMA}:\n  "
        + "\n  ".join(_config_errors)
        + "\nFix them in config.yaml or in the file given with --configfile (which extends it)."
    )
validate(config, CONFIG_SCHEMA)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/classifier.smk"
include: "rules/cams.smk"
include: "rules/affinity.smk"
include: "rules/segmenter.smk"
include: "rules/report.smk"


report: "report/workflow.rst"


rule all:
    input:
        final_targets(),
    default_target: True
