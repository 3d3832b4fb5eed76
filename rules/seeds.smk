# Stage: confident seeds from the relevance maps (background (1 - max)^alpha at a low and a
# high alpha, each refined by a dense CRF), scattered over shards, gathered, scored.


rule crf_seeds:
    input:
        store=f"{RES}/cams/{{method}}.h5",
        data=DATA_ROOT,
    output:
        temp(directory(f"{RES}/seeds/shards/{{method}}/{{scatteritem}}")),
    params:
        shards=shard_args,
        cfg=section("seeds", "alpha_low", "alpha_high", "crf"),
    log:
        log_path("crf_seeds", "{method}/{scatteritem}"),
    benchmark:
        bench_path("crf_seeds", "{method}/{scatteritem}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("crf_seeds"),
    shell:
        "$PY workflow_scripts/seeds_crf.py --store {input.store} --data-root {input.data} "
        "{params.shards} --config-json {params.cfg} --out-dir {output} --log {log}"


rule gather_seeds:
    input:
        gather.seeds(f"{RES}/seeds/shards/{{{{method}}}}/{{scatteritem}}"),
    output:
        directory(f"{RES}/seeds/{{method}}"),
    log:
        log_path("gather_seeds", "{method}"),
    benchmark:
        bench_path("gather_seeds", "{method}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("gather_seeds"),
    shell:
        "$PY workflow_scripts/shards_gather.py --shards {input} --out {output} --log {log}"


rule eval_seeds:
    input:
        masks=f"{RES}/seeds/{{method}}",
        data=DATA_ROOT,
    output:
        summary=f"{TABLES}/seeds_{{method}}_summary.csv",
        per_class=f"{TABLES}/seeds_{{method}}.csv",
        md=f"{TABLES}/seeds_{{method}}.md",
    params:
        stage=SEED_STAGE,
        split=TRAIN_SPLIT,
    log:
        log_path("eval_seeds", "{method}"),
    benchmark:
        bench_path("eval_seeds", "{method}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("eval_seeds"),
    shell:
        "$PY workflow_scripts/evaluate_masks.py --pred-dir {input.masks} --data-root {input.data} "
        "--split {params.split} --stage {params.stage:q} --method {wildcards.method} "
        "--out-summary {output.summary} --out-per-class {output.per_class} "
        "--out-md {output.md} --log {log}"


# Cheap rules run by Snakemake itself, not submitted to a cluster (see rules/data.smk).
localrules:
    gather_seeds,
    eval_seeds,
