# Stage: fine-tune a ViT as a multi-label classifier on image-level labels.


rule finetune_classifier:
    input:
        data=DATA_ROOT,
        train_labels=f"{RES}/labels/{TRAIN_SPLIT}.csv",
        val_labels=f"{RES}/labels/{EVAL_SPLIT}.csv",
    output:
        model=f"{RES}/classifier/model.pt",
        metrics=f"{RES}/classifier/metrics.json",
        table=f"{RES}/classifier/val_metrics.csv",  # in the report as HTML (report_tables)
        history=f"{RES}/classifier/history.csv",
    params:
        cfg=as_json(config["classifier"]),
        seed=config["seed"],
        device=untracked(config["device"]),
        out_dir=out_dir(),
    log:
        log_path("finetune_classifier"),
    benchmark:
        bench_path("finetune_classifier")
    conda:
        CONDA_ENV
    threads: rule_threads("finetune_classifier")
    resources:
        **gpu_resources("finetune_classifier"),
    shell:
        "$PY workflow_scripts/classifier_train.py --data-root {input.data} "
        "--train-labels {input.train_labels} --val-labels {input.val_labels} "
        "--config-json {params.cfg} --seed {params.seed} --threads {threads} "
        "--device {params.device} --out-dir {params.out_dir} --log {log}"
