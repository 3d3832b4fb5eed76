# wsss: weakly-supervised semantic segmentation from image-level labels.
# Stages: data -> classifier -> relevance maps -> CRF seeds -> AffinityNet -> random walk
#         -> segmenter -> tables and report. See README.md and ../shared/DESIGN.md.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


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
