# Stage: the summary tables across stages, the report's HTML tables and its figures.
# Snakemake's report shows images and HTML inline, a CSV only as a download link: every table
# it shows is rendered as HTML (report_tables, and figure_runtimes for the runtimes).


rule summary:
    input:
        summaries=summary_inputs(),
        per_class=per_class_inputs(),
    output:
        csv=f"{TABLES}/summary.csv",
        md=f"{TABLES}/summary.md",
        per_class=f"{TABLES}/summary_per_class.csv",
        per_class_md=f"{TABLES}/summary_per_class.md",
    log:
        log_path("summary"),
    benchmark:
        bench_path("summary")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("summary"),
    shell:
        "$PY workflow_scripts/report_summary.py --inputs {input.summaries} "
        "--per-class-inputs {input.per_class} --out-csv {output.csv} --out-md {output.md} "
        "--out-per-class {output.per_class} --out-per-class-md {output.per_class_md} --log {log}"


rule report_tables:
    input:
        summary=f"{TABLES}/summary.csv",
        per_class=f"{TABLES}/summary_per_class.csv",
        classifier=f"{RES}/classifier/val_metrics.csv",
        cams=f"{TABLES}/cams_comparison.csv",
        ceiling=ceiling_tables(),
    output:
        summary=report(
            f"{TABLES}/summary.html",
            caption="../report/summary.rst",
            category="0. Summary",
            labels={"table": "1. scores per stage"},
        ),
        per_class=report(
            f"{TABLES}/summary_per_class.html",
            caption="../report/summary_per_class.rst",
            category="0. Summary",
            labels={"table": "2. IoU per class and stage"},
        ),
        classifier=report(
            f"{TABLES}/classifier_val_metrics.html",
            caption="../report/classifier_metrics.rst",
            category="1. Classifier",
            labels={"result": "validation metrics per class"},
        ),
        cams=report(
            f"{TABLES}/cams_comparison.html",
            caption="../report/cams_comparison.rst",
            category="2. Relevance maps",
            labels={"result": "methods compared (table)"},
        ),
        ceiling=[
            report(
                path,
                caption="../report/walk_ceiling.rst",
                category="3. Random walk",
                labels={"result": f"walk ceiling ({method})"},
            )
            for method, path in zip(SEED_METHODS, ceiling_tables(".html"))
        ],
    params:
        ceiling=lambda wildcards, input, output: " ".join(
            f"--table {csv} {html} 'Random walk ceiling ({method})'"
            for method, csv, html in zip(SEED_METHODS, input.ceiling, output.ceiling)
        ),
    log:
        log_path("report_tables"),
    benchmark:
        bench_path("report_tables")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("report_tables"),
    shell:
        "$PY workflow_scripts/report_tables.py "
        "--table {input.summary} {output.summary} 'Summary: scores per stage (percent)' "
        "--table {input.per_class} {output.per_class} 'IoU per class and stage (percent)' "
        "--table {input.classifier} {output.classifier} "
        "'Classifier: validation metrics per class (percent)' "
        "--table {input.cams} {output.cams} 'Relevance-map methods compared (train split)' "
        "{params.ceiling} --log {log}"


rule figure_samples:
    input:
        data=DATA_ROOT,
        store=f"{RES}/cams/{SEG_METHOD}.h5",
        seeds=f"{RES}/seeds/{SEG_METHOD}",
        rw=f"{RES}/walk/{SEG_METHOD}/rw",
        segmenter=f"{RES}/segmenter/{SEG_METHOD}/segmenter.pt",
        pred=f"{RES}/predictions/{SEG_METHOD}/seg",
        crf=f"{RES}/predictions/{SEG_METHOD}/seg_crf",
    output:
        train=report(
            f"{RES}/figures/samples.png",
            caption="../report/samples.rst",
            category="4. Figures",
            labels={"figure": "1. train images through the stages"},
        ),
        val=report(
            f"{RES}/figures/samples_val.png",
            caption="../report/samples_val.rst",
            category="4. Figures",
            labels={"figure": "2. val images: segmenter predictions"},
        ),
    params:
        cfg=as_json(config["report"]),
        inference=as_json({k: config["segmenter"]["inference"][k] for k in ("scales", "flip")}),
        train_split=TRAIN_SPLIT,
        val_split=EVAL_SPLIT,
        device=untracked(config["device"]),
    log:
        log_path("figure_samples"),
    benchmark:
        bench_path("figure_samples")
    conda:
        CONDA_ENV
    threads: rule_threads("figure_samples")
    resources:
        **gpu_resources("figure_samples"),
    shell:
        "$PY workflow_scripts/report_figures.py samples --data-root {input.data} "
        "--train-split {params.train_split} --val-split {params.val_split} "
        "--config-json {params.cfg} --store {input.store} "
        "--seeds-dir {input.seeds} --rw-dir {input.rw} --segmenter {input.segmenter} "
        "--inference-json {params.inference} --device {params.device} --threads {threads} "
        "--pred-dir {input.pred} --crf-dir {input.crf} "
        "--out {output.train} --out-val {output.val} --log {log}"


rule figure_methods:
    input:
        data=DATA_ROOT,
        stores=expand(f"{RES}/cams/{{method}}.h5", method=CAM_METHODS),
    output:
        report(
            f"{RES}/figures/methods.png",
            caption="../report/methods.rst",
            category="2. Relevance maps",
            labels={"result": "methods compared (figure)"},
        ),
    params:
        cfg=section("report", "num_train_samples"),
        split=TRAIN_SPLIT,
        stores=lambda wildcards, input: " ".join(
            f"{method}={path}" for method, path in zip(CAM_METHODS, input.stores)
        ),
    log:
        log_path("figure_methods"),
    benchmark:
        bench_path("figure_methods")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("figure_methods"),
    shell:
        "$PY workflow_scripts/report_figures.py methods --data-root {input.data} "
        "--train-split {params.split} --config-json {params.cfg} --store {params.stores} "
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
            labels={"figure": "3. training curves"},
        ),
    log:
        log_path("figure_curves"),
    benchmark:
        bench_path("figure_curves")
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
        # every other job has finished (and written its benchmark file) once these exist:
        # report_tables waits for the summary, the comparison, the classifier and the ceilings
        rules.report_tables.output,
        rules.figure_samples.output,
        rules.figure_methods.output,
        rules.figure_curves.output,
    output:
        png=report(
            f"{RES}/figures/runtimes.png",
            caption="../report/runtimes.rst",
            category="5. Runtimes",
            labels={"result": "chart"},
        ),
        html=report(
            f"{TABLES}/runtimes.html",
            caption="../report/runtimes.rst",
            category="5. Runtimes",
            labels={"result": "table"},
        ),
        csv=f"{TABLES}/runtimes.csv",
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
        "--out-png {output.png} --out-csv {output.csv} --out-md {output.md} "
        "--out-html {output.html} --log {log}"


# Cheap rules run by Snakemake itself, not submitted to a cluster (see rules/data.smk).
# figure_samples stays a job: it runs the segmenter on its train images.
localrules:
    summary,
    report_tables,
    figure_methods,
    figure_curves,
    figure_runtimes,
