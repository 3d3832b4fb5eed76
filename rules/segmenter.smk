# Stage: a segmenter (a decoder on the classifier, or DeepLabV3+ on a CNN) trained on the
# pseudo masks, predicted and scored on val.


rule train_segmenter:
    input:
        masks=f"{RES}/walk/{{method}}/{config['segmenter']['pseudo_masks']}",
        data=DATA_ROOT,
        classifier=f"{RES}/classifier/model.pt",
    output:
        model=f"{RES}/segmenter/{{method}}/segmenter.pt",
        history=f"{RES}/segmenter/{{method}}/history.csv",
    params:
        cfg=as_json(config["segmenter"]["net"]),
        seed=config["seed"],
        device=untracked(config["device"]),
        split=TRAIN_SPLIT,
        val_split=EVAL_SPLIT,
        out_dir=out_dir(),
    log:
        log_path("train_segmenter", "{method}"),
    benchmark:
        bench_path("train_segmenter", "{method}")
    conda:
        CONDA_ENV
    threads: rule_threads("train_segmenter")
    resources:
        **gpu_resources("train_segmenter"),
    shell:
        "$PY workflow_scripts/segmenter_train.py --masks {input.masks} "
        "--data-root {input.data} --split {params.split} --val-split {params.val_split} "
        "--config-json {params.cfg} --seed {params.seed} --threads {threads} "
        "--device {params.device} --classifier {input.classifier} "
        "--out-dir {params.out_dir} --log {log}"


rule predict_segmenter:
    input:
        model=f"{RES}/segmenter/{{method}}/segmenter.pt",
        data=DATA_ROOT,
    output:
        pred=directory(f"{RES}/predictions/{{method}}/seg"),
        crf=directory(f"{RES}/predictions/{{method}}/seg_crf"),
    params:
        split=EVAL_SPLIT,
        cfg=as_json(config["segmenter"]["inference"]),
        device=untracked(config["device"]),
    log:
        log_path("predict_segmenter", "{method}"),
    benchmark:
        bench_path("predict_segmenter", "{method}")
    conda:
        CONDA_ENV
    threads: rule_threads("predict_segmenter")
    resources:
        **gpu_resources("predict_segmenter"),
    shell:
        "$PY workflow_scripts/segmenter_predict.py --model {input.model} "
        "--data-root {input.data} --split {params.split} --config-json {params.cfg} "
        "--device {params.device} --threads {threads} --out-dir {output.pred} "
        "--crf-out-dir {output.crf} --log {log}"


rule eval_segmenter:
    input:
        masks=f"{RES}/predictions/{{method}}/{{kind}}",
        data=DATA_ROOT,
    output:
        summary=f"{TABLES}/segmenter_{{method}}_{{kind}}_summary.csv",
        per_class=f"{TABLES}/segmenter_{{method}}_{{kind}}.csv",
        md=f"{TABLES}/segmenter_{{method}}_{{kind}}.md",
    wildcard_constraints:
        kind="seg|seg_crf",
    params:
        stage=lambda w: SEG_STAGES[w.kind],
        split=EVAL_SPLIT,
    log:
        log_path("eval_segmenter", "{method}_{kind}"),
    benchmark:
        bench_path("eval_segmenter", "{method}_{kind}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("eval_segmenter"),
    shell:
        "$PY workflow_scripts/evaluate_masks.py --pred-dir {input.masks} --data-root {input.data} "
        "--split {params.split} --stage {params.stage:q} --method {wildcards.method} "
        "--out-summary {output.summary} --out-per-class {output.per_class} "
        "--out-md {output.md} --log {log}"


# The VOC 2012 test-server export (not in `all`: `snakemake export_voc_test` or the tar):
# predictions on the test images in the server's layout, packed as a tar.
rule export_voc_test:
    input:
        model=f"{RES}/segmenter/{SEG_METHOD}/segmenter.pt",
        data=VOC_TEST_ROOT,
    output:
        masks=directory(f"{RES}/export/VOC2012"),
        tar=f"{RES}/export/voc2012_test.tar",
    params:
        cfg=as_json({k: config["segmenter"]["inference"][k] for k in ("scales", "flip")}),
        device=untracked(config["device"]),
    log:
        log_path("export_voc_test"),
    benchmark:
        bench_path("export_voc_test")
    conda:
        CONDA_ENV
    threads: rule_threads("export_voc_test")
    resources:
        **gpu_resources("export_voc_test"),
    shell:
        "$PY workflow_scripts/segmenter_export.py --model {input.model} "
        "--data-root {input.data} --config-json {params.cfg} --device {params.device} "
        "--threads {threads} --out-dir {output.masks} --out-tar {output.tar} --log {log}"


# Cheap rules run by Snakemake itself, not submitted to a cluster (see rules/data.smk).
localrules:
    eval_segmenter,
