# Stage: the random walk over AffinityNet affinities turns the relevance maps into pseudo
# masks (rw, and rw_crf refined by a dense CRF), scattered over shards, gathered, scored; and
# the walk_ceiling table (the same walk with ground-truth affinities).


rule random_walk:
    input:
        store=f"{RES}/cams/{{method}}.h5",
        affinity=f"{RES}/affinity/{{method}}/affinity.pt",
        data=DATA_ROOT,
    output:
        rw=temp(directory(f"{RES}/walk/shards/{{method}}/rw/{{scatteritem}}")),
        crf=temp(directory(f"{RES}/walk/shards/{{method}}/rw_crf/{{scatteritem}}")),
    params:
        shards=shard_args,
        cfg=section("walk", "alpha", "beta", "logt", "radius", "normalise", "crf"),
        device=untracked(config["device"]),
    log:
        log_path("random_walk", "{method}/{scatteritem}"),
    benchmark:
        bench_path("random_walk", "{method}/{scatteritem}")
    conda:
        CONDA_ENV
    threads: rule_threads("random_walk")
    resources:
        **gpu_resources("random_walk"),
    shell:
        "$PY workflow_scripts/walk_masks.py --store {input.store} "
        "--affinity {input.affinity} --data-root {input.data} {params.shards} "
        "--config-json {params.cfg} --device {params.device} --threads {threads} "
        "--out-dir {output.rw} --crf-out-dir {output.crf} --log {log}"


rule gather_walk:
    input:
        gather.walk(f"{RES}/walk/shards/{{{{method}}}}/{{{{kind}}}}/{{scatteritem}}"),
    output:
        directory(f"{RES}/walk/{{method}}/{{kind}}"),
    wildcard_constraints:
        kind="rw|rw_crf",
    log:
        log_path("gather_walk", "{method}_{kind}"),
    benchmark:
        bench_path("gather_walk", "{method}_{kind}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("gather_walk"),
    shell:
        "$PY workflow_scripts/shards_gather.py --shards {input} --out {output} --log {log}"


rule eval_walk:
    input:
        masks=f"{RES}/walk/{{method}}/{{kind}}",
        data=DATA_ROOT,
    output:
        summary=f"{TABLES}/walk_{{method}}_{{kind}}_summary.csv",
        per_class=f"{TABLES}/walk_{{method}}_{{kind}}.csv",
        md=f"{TABLES}/walk_{{method}}_{{kind}}.md",
    wildcard_constraints:
        kind="rw|rw_crf",
    params:
        stage=lambda w: WALK_STAGES[w.kind],
        split=TRAIN_SPLIT,
    log:
        log_path("eval_walk", "{method}_{kind}"),
    benchmark:
        bench_path("eval_walk", "{method}_{kind}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("eval_walk"),
    shell:
        "$PY workflow_scripts/evaluate_masks.py --pred-dir {input.masks} --data-root {input.data} "
        "--split {params.split} --stage {params.stage:q} --method {wildcards.method} "
        "--out-summary {output.summary} --out-per-class {output.per_class} "
        "--out-md {output.md} --log {log}"


rule walk_ceiling:
    input:
        store=f"{RES}/cams/{{method}}.h5",
        affinity=f"{RES}/affinity/{{method}}/affinity.pt",
        data=DATA_ROOT,
    output:
        csv=f"{TABLES}/walk_ceiling_{{method}}.csv",  # in the report as HTML (report_tables)
        md=f"{TABLES}/walk_ceiling_{{method}}.md",
    params:
        split=TRAIN_SPLIT,
        cfg=section("walk", "ceiling_every", "alpha", "beta", "logt", "radius", "normalise"),
        device=untracked(config["device"]),
    log:
        log_path("walk_ceiling", "{method}"),
    benchmark:
        bench_path("walk_ceiling", "{method}")
    conda:
        CONDA_ENV
    threads: rule_threads("walk_ceiling")
    resources:
        **gpu_resources("walk_ceiling"),
    shell:
        "$PY workflow_scripts/walk_ceiling.py --store {input.store} "
        "--affinity {input.affinity} --data-root {input.data} --split {params.split} "
        "--config-json {params.cfg} --device {params.device} --threads {threads} "
        "--out-csv {output.csv} --out-md {output.md} --log {log}"


# Cheap rules run by Snakemake itself, not submitted to a cluster (see rules/data.smk).
localrules:
    gather_walk,
    eval_walk,
