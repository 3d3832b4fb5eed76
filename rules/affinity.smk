# Stage: the AffinityNet, trained on pixel pairs labelled by the seeds.


rule train_affinity:
    input:
        model=f"{RES}/classifier/model.pt",
        seeds=f"{RES}/seeds/{{method}}",
        data=DATA_ROOT,
    output:
        model=f"{RES}/affinity/{{method}}/affinity.pt",
        history=f"{RES}/affinity/{{method}}/history.csv",
    params:
        cfg=as_json(config["affinity"]["net"]),
        seed=config["seed"],
        device=untracked(config["device"]),
        split=TRAIN_SPLIT,
        val_split=EVAL_SPLIT,
        out_dir=out_dir(),
    log:
        log_path("train_affinity", "{method}"),
    benchmark:
        bench_path("train_affinity", "{method}")
    conda:
        CONDA_ENV
    threads: rule_threads("train_affinity")
    resources:
        **gpu_resources("train_affinity"),
    shell:
        "$PY workflow_scripts/affinity_train.py --classifier {input.model} "
        "--seeds {input.seeds} --data-root {input.data} --split {params.split} "
        "--val-split {params.val_split} "
        "--config-json {params.cfg} --seed {params.seed} --threads {threads} "
        "--device {params.device} --out-dir {params.out_dir} --log {log}"
