# Stage 3: CRF seeds from the relevance maps, AffinityNet, random walk into pseudo masks.

AFF_CFG = config["affinity"]
RW_CFG = config["random_walk"]


rule crf_seeds:
    input:
        store=f"{RES}/cams/{{method}}.h5",
        data=DATA_TOKEN,
    output:
        temp(directory(f"{RES}/seeds/shards/{{method}}/{{scatteritem}}")),
    params:
        shard=lambda w: int(w.scatteritem.split("-of-")[0]) - 1,
        num_shards=lambda w: int(w.scatteritem.split("-of-")[1]),
        seeds=settings(
            alpha_low=AFF_CFG["alpha_low"],
            alpha_high=AFF_CFG["alpha_high"],
            crf=as_json(AFF_CFG["crf"]),
        ),
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
        "{PY} workflow_scripts/crf_seeds.py --store {input.store} --data-root {DATA_ROOT} "
        "--ids-shard {params.shard} --num-shards {params.num_shards} "
        "--alpha-low {params.seeds[alpha_low]} --alpha-high {params.seeds[alpha_high]} "
        "--crf-json {params.seeds[crf]} --out-dir {output} " + TO_LOG


rule gather_seeds:
    input:
        gather.seeds(f"{RES}/seeds/shards/{{{{method}}}}/{{scatteritem}}"),
    output:
        directory(f"{RES}/seeds/{{method}}"),
    log:
        log_path("gather_seeds", "{method}"),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("gather_seeds"),
    shell:
        "{PY} workflow_scripts/gather_masks.py --shards {input} --out {output} " + TO_LOG


rule train_affinity:
    input:
        model=f"{RES}/classifier/model.pt",
        seeds=f"{RES}/seeds/{{method}}",
        data=DATA_TOKEN,
    output:
        model=f"{RES}/affinity/{{method}}/affinity.pt",
        history=f"{RES}/affinity/{{method}}/history.csv",
    params:
        cfg=as_json(AFF_CFG["net"]),
        seed=config["seed"],
        device=config["device"],
        split=TRAIN_SPLIT,
        out_dir=f"{RES}/affinity/{{method}}",
    log:
        log_path("train_affinity", "{method}"),
    benchmark:
        bench_path("train_affinity", "{method}")
    conda:
        CONDA_ENV
    threads: RESOURCES["threads"]
    resources:
        **gpu_resources("train_affinity"),
    shell:
        "{PY} workflow_scripts/train_affinity.py --classifier {input.model} "
        "--seeds {input.seeds} --data-root {DATA_ROOT} --split {params.split} "
        "--config-json {params.cfg} --seed {params.seed} --threads {threads} "
        "--device {params.device} --out-dir {params.out_dir} " + TO_LOG


rule random_walk:
    input:
        store=f"{RES}/cams/{{method}}.h5",
        affinity=f"{RES}/affinity/{{method}}/affinity.pt",
        data=DATA_TOKEN,
    output:
        rw=temp(directory(f"{RES}/pseudo/shards/{{method}}/rw/{{scatteritem}}")),
        crf=temp(directory(f"{RES}/pseudo/shards/{{method}}/rw_crf/{{scatteritem}}")),
    params:
        shard=lambda w: int(w.scatteritem.split("-of-")[0]) - 1,
        num_shards=lambda w: int(w.scatteritem.split("-of-")[1]),
        walk=settings(
            alpha=RW_CFG["alpha"],
            beta=RW_CFG["beta"],
            logt=RW_CFG["logt"],
            radius=RW_CFG["radius"],
            crf=as_json(RW_CFG["crf"]),
            device=config["device"],
        ),
    log:
        log_path("random_walk", "{method}/{scatteritem}"),
    benchmark:
        bench_path("random_walk", "{method}/{scatteritem}")
    conda:
        CONDA_ENV
    threads: RESOURCES["threads"]
    resources:
        **gpu_resources("random_walk"),
    shell:
        "{PY} workflow_scripts/random_walk.py --store {input.store} "
        "--affinity {input.affinity} --data-root {DATA_ROOT} "
        "--shard {params.shard} --num-shards {params.num_shards} "
        "--alpha {params.walk[alpha]} --beta {params.walk[beta]} --logt {params.walk[logt]} "
        "--radius {params.walk[radius]} --device {params.walk[device]} --threads {threads} "
        "--out-dir {output.rw} --crf-json {params.walk[crf]} --crf-out-dir {output.crf} "
        + TO_LOG


rule gather_pseudo:
    input:
        gather.walk(f"{RES}/pseudo/shards/{{{{method}}}}/{{{{kind}}}}/{{scatteritem}}"),
    output:
        directory(f"{RES}/pseudo/{{method}}/{{kind}}"),
    wildcard_constraints:
        kind="rw|rw_crf",
    log:
        log_path("gather_pseudo", "{method}_{kind}"),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("gather_pseudo"),
    shell:
        "{PY} workflow_scripts/gather_masks.py --shards {input} --out {output} " + TO_LOG


PSEUDO_STAGES = {"seeds": "seeds", "rw": "random walk", "rw_crf": "random walk + CRF"}


def pseudo_dir(wildcards):
    if wildcards.kind == "seeds":
        return f"{RES}/seeds/{wildcards.method}"
    return f"{RES}/pseudo/{wildcards.method}/{wildcards.kind}"


rule eval_pseudo:
    input:
        masks=pseudo_dir,
        data=DATA_TOKEN,
    output:
        summary=f"{TABLES}/pseudo_{{method}}_{{kind}}_summary.csv",
        per_class=f"{TABLES}/pseudo_{{method}}_{{kind}}.csv",
        md=f"{TABLES}/pseudo_{{method}}_{{kind}}.md",
    wildcard_constraints:
        kind="seeds|rw|rw_crf",
    params:
        stage=lambda w: PSEUDO_STAGES[w.kind],
        split=TRAIN_SPLIT,
    log:
        log_path("eval_pseudo", "{method}_{kind}"),
    benchmark:
        bench_path("eval_pseudo", "{method}_{kind}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("eval_pseudo"),
    shell:
        "{PY} workflow_scripts/eval_masks.py --pred-dir {input.masks} --data-root {DATA_ROOT} "
        "--split {params.split} --stage {params.stage:q} --method {wildcards.method} "
        "--out-summary {output.summary} --out-per-class {output.per_class} "
        "--out-md {output.md} " + TO_LOG


rule walk_ceiling:
    input:
        store=f"{RES}/cams/{{method}}.h5",
        affinity=f"{RES}/affinity/{{method}}/affinity.pt",
        data=DATA_TOKEN,
    output:
        csv=report(
            f"{TABLES}/walk_ceiling_{{method}}.csv",
            caption="../report/walk_ceiling.rst",
            category="3. Random walk",
        ),
        md=f"{TABLES}/walk_ceiling_{{method}}.md",
    params:
        split=TRAIN_SPLIT,
        walk=settings(
            every=RW_CFG["ceiling_every"],
            alpha=RW_CFG["alpha"],
            beta=RW_CFG["beta"],
            logt=RW_CFG["logt"],
            radius=RW_CFG["radius"],
            device=config["device"],
        ),
    log:
        log_path("walk_ceiling", "{method}"),
    benchmark:
        bench_path("walk_ceiling", "{method}")
    conda:
        CONDA_ENV
    threads: RESOURCES["threads"]
    resources:
        **gpu_resources("walk_ceiling"),
    shell:
        "{PY} workflow_scripts/walk_ceiling.py --store {input.store} "
        "--affinity {input.affinity} --data-root {DATA_ROOT} --split {params.split} "
        "--every {params.walk[every]} --alpha {params.walk[alpha]} --beta {params.walk[beta]} "
        "--logt {params.walk[logt]} --radius {params.walk[radius]} "
        "--device {params.walk[device]} --threads {threads} "
        "--out-csv {output.csv} --out-md {output.md} " + TO_LOG


# Cheap rules run by Snakemake itself, not submitted to a cluster (see rules/data.smk).
localrules:
    gather_seeds,
    gather_pseudo,
    eval_pseudo,
