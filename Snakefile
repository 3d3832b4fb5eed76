# wsss: weakly-supervised semantic segmentation from image-level labels.
# Stages: data -> classifier -> cams -> seeds -> affinity -> walk -> segmenter -> report.
# See README.md (Layout: where each stage lives).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# common.smk checks the config against schemas/config.schema.yaml first (every problem named
# by its key) and fills in the schema's defaults
include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/classifier.smk"
include: "rules/cams.smk"
include: "rules/seeds.smk"
include: "rules/affinity.smk"
include: "rules/walk.smk"
include: "rules/segmenter.smk"
include: "rules/report.smk"


report: "report/workflow.rst"


onsuccess:
    print(run_end_message())


rule all:
    input:
        final_targets(),
    default_target: True
