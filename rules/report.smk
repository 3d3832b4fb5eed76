# Stage: the summary tables across stages, figures and the report's material.


rule summary:
    input:
        summaries=summary_inputs(),
        per_class=per_class_inputs(),
    output:
        csv=report(
            f"{TABLES}/summary.csv",
            caption="../report/summary.rst",
            category="0. Summary",
        ),
        md=f"{TABLES}/summary.md",
        per_class=report(
            f"{TABLES}/summary_per_class.csv",
            caption="../report/summary_per_class.rst",
            category="0. Summary",
        ),
        per_class_md=f"{TABLES}/summary_per_class.md",
    log:
        log_path("summary"),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("summary"),
    shell:
        "$PY workflow_scripts/report_summary.py --inputs {input.summaries} "
        "--per-class-inputs {input.per_class} --out-csv {output.csv} --out-md {output.md} "
        "--out-per-class {output.per_class} --out-per-class-md {output.per_class_md} --log {log}"


rule figure_samples:
    input:
        data=DATA_ROOT,
        store=f"{RES}/cams/{SEG_METHOD}.h5",
        seeds=f"{RES}/seeds/{SEG_METHOD}",
        rw=f"{RES}/walk/{SEG_METHOD}/rw",
        pred=f"{RES}/predictions/{SEG_METHOD}/seg",
    output:
        report(
            f"{RES}/figures/samples.png",
            caption="../report/samples.rst",
            category="4. Figures",
        ),
    params:
        cfg=as_json(config["report"]),
        train_split=TRAIN_SPLIT,
        val_split=EVAL_SPLIT,
    log:
        log_path("figure_samples"),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("figure_samples"),
    shell:
        "$PY workflow_scripts/report_figures.py samples --data-root {input.data} "
        "--train-split {params.train_split} --val-split {params.val_split} "
        "--config-json {params.cfg} "
        "--store {input.store} "
        "--seeds-dir {input.seeds} --rw-dir {input.rw} --pred-dir {input.pred} "
        "--out {output} --log {log}"


rule figure_curves:
    input:
        classifier=f"{RES}/classifier/history.csv",
        affinity=f"{RES}/affinity/{SEG_METHOD}/history.csv",
        segmenter=f"{RES}/segmenter/{SEG_METHOD}/history.csv",
    output:
        report(
            f"{RES}/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="4. Figures",
        ),
    log:
        log_path("figure_curves"),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("figure_curves"),
    shell:
        "$PY workflow_scripts/report_figures.py curves --history classifier={input.classifier} "
        "affinity={input.affinity} segmenter={input.segmenter} --out {output} --log {log}"


rule figure_runtimes:
    input:
        # every other job has finished (and written its benchmark file) once the summary exists
        f"{TABLES}/summary.csv",
        f"{RES}/figures/samples.png",
        f"{RES}/figures/training_curves.png",
        ceiling_tables(),
    output:
        png=report(
            f"{RES}/figures/runtimes.png",
            caption="../report/runtimes.rst",
            category="4. Figures",
        ),
        csv=report(
            f"{TABLES}/runtimes.csv",
            caption="../report/runtimes.rst",
            category="4. Figures",
        ),
        md=f"{TABLES}/runtimes.md",
    params:
        bench_dir=f"{RES}/benchmarks",  # read, not written: no output prefix
    log:
        log_path("figure_runtimes"),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("figure_runtimes"),
    shell:
        "$PY workflow_scripts/report_figures.py runtimes --benchmark-dir {params.bench_dir} "
        "--out-png {output.png} --out-csv {output.csv} --out-md {output.md} --log {log}"


# Cheap rules run by Snakemake itself, not submitted to a cluster (see rules/data.smk).
localrules:
    summary,
    figure_samples,
    figure_curves,
    figure_runtimes,
