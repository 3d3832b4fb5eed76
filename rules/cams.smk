# Stage: class-specific relevance maps (transformer attribution and its baselines),
# scattered over shards, gathered into one HDF5 store per method, scored as seeds.

rule extract_cams:
    input:
        model=f"{RES}/classifier/model.pt",
        data=DATA_ROOT,
        labels=f"{RES}/labels/{TRAIN_SPLIT}.csv",
    output:
        temp(f"{RES}/cams/shards/{{method}}/{{scatteritem}}.h5"),
    params:
        shards=shard_args,
        cfg=section("cams", "scales", "flip", "start_layer"),
        device=untracked(config["device"]),
    log:
        log_path("extract_cams", "{method}/{scatteritem}"),
    benchmark:
        bench_path("extract_cams", "{method}/{scatteritem}")
    conda:
        CONDA_ENV
    threads: rule_threads("extract_cams")
    resources:
        **gpu_resources("extract_cams"),
    shell:
        "$PY workflow_scripts/cams_extract.py --classifier {input.model} "
        "--data-root {input.data} --labels {input.labels} --method {wildcards.method} "
        "{params.shards} --config-json {params.cfg} --device {params.device} "
        "--threads {threads} --out {output} --log {log}"


rule gather_cams:
    input:
        gather.cams(f"{RES}/cams/shards/{{{{method}}}}/{{scatteritem}}.h5"),
    output:
        f"{RES}/cams/{{method}}.h5",
    log:
        log_path("gather_cams", "{method}"),
    benchmark:
        bench_path("gather_cams", "{method}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("gather_cams"),
    shell:
        "$PY workflow_scripts/cams_gather.py --shards {input} --out {output} --log {log}"


rule eval_cams:
    input:
        store=f"{RES}/cams/{{method}}.h5",
        data=DATA_ROOT,
    output:
        csv=f"{TABLES}/cams_{{method}}.csv",
        md=f"{TABLES}/cams_{{method}}.md",
        sweep=f"{TABLES}/cams_{{method}}_sweep.csv",
        summary=f"{TABLES}/cams_{{method}}_summary.csv",
    params:
        cfg=as_json(config["cams"]["eval"]),
        split=TRAIN_SPLIT,
    log:
        log_path("eval_cams", "{method}"),
    benchmark:
        bench_path("eval_cams", "{method}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("eval_cams"),
    shell:
        "$PY workflow_scripts/cams_eval.py --store {input.store} --data-root {input.data} "
        "--split {params.split} --config-json {params.cfg} "
        "--out-csv {output.csv} --out-md {output.md} --out-sweep {output.sweep} "
        "--out-summary {output.summary} --log {log}"


rule compare_cams:
    input:
        summaries=expand(f"{TABLES}/cams_{{method}}_summary.csv", method=CAM_METHODS),
        per_class=expand(f"{TABLES}/cams_{{method}}.csv", method=CAM_METHODS),
    output:
        csv=f"{TABLES}/cams_comparison.csv",  # in the report as HTML (report_tables)
        md=f"{TABLES}/cams_comparison.md",
    log:
        log_path("compare_cams"),
    benchmark:
        bench_path("compare_cams")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("compare_cams"),
    shell:
        "$PY workflow_scripts/cams_compare.py --summaries {input.summaries} "
        "--per-class {input.per_class} "
        "--out-csv {output.csv} --out-md {output.md} --log {log}"


# Cheap rules run by Snakemake itself, not submitted to a cluster (see rules/data.smk).
# eval_cams stays a job: it upsamples every map to full resolution for each threshold of
# the sweep, minutes per method on VOC's 10,582 training images.
localrules:
    gather_cams,
    compare_cams,
