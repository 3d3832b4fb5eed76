# Data: the embedded synthetic dataset, PASCAL VOC 2012 (+ SBD), COCO 2014 or a folder of your
# own, and image-level label tables.


rule make_synthetic:
    output:
        directory(f"{RES}/data/synthetic"),
    params:
        cfg=as_json(DATA_CFG["synthetic"]),
    log:
        log_path("make_synthetic"),
    benchmark:
        bench_path("make_synthetic")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("make_synthetic"),
    shell:
        "$PY workflow_scripts/data_synthetic.py --root {output} --config-json {params.cfg} "
        "--log {log}"


rule make_labels:
    input:
        data=DATA_ROOT,
    output:
        f"{RES}/labels/{{split}}.csv",
    params:
        # a folder of your own brings its tables (prepare_folder put them in the tree)
        source="table" if DATA_CFG["source"] == "folder" else DATA_CFG["label_source"],
    log:
        log_path("make_labels", "{split}"),
    benchmark:
        bench_path("make_labels", "{split}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("make_labels"),
    shell:
        "$PY workflow_scripts/data_labels.py --root {input.data} --split {wildcards.split} "
        "--source {params.source} --out {output} --log {log}"


rule prepare_folder:
    input:
        folder_files,
    output:
        directory(f"{RES}/data/folder"),
    params:
        folder=DATA_CFG["folder"]["path"],
        splits=list(dict.fromkeys([TRAIN_SPLIT, EVAL_SPLIT])),
    log:
        log_path("prepare_folder"),
    benchmark:
        bench_path("prepare_folder")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("prepare_folder"),
    shell:
        "$PY workflow_scripts/data_prepare_folder.py --folder {params.folder:q} "
        "--splits {params.splits} --out {output} --log {log}"


VOC = DATA_CFG["voc2012"]


rule download_voc:
    output:
        f"{VOC['downloads']}/VOCtrainval_11-May-2012.tar",
    params:
        # the checksum names the archive and is a rerun trigger; the URL is only where to
        # fetch it, so switching to a mirror does not download (and rebuild) everything again
        md5=VOC["voc_md5"],
        url=untracked(VOC["voc_url"]),
    log:
        "logs/download_voc.log",
    benchmark:
        bench_path("download_voc")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("download_voc"),
    shell:
        "$PY workflow_scripts/data_download.py --url {params.url:q} --md5 {params.md5} "
        "--out {output} --log {log}"


rule download_sbd:
    output:
        f"{VOC['downloads']}/benchmark.tgz",
    params:
        md5=VOC["sbd_md5"],  # as in download_voc: the URL is no rerun trigger
        url=untracked(VOC["sbd_url"]),
    log:
        "logs/download_sbd.log",
    benchmark:
        bench_path("download_sbd")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("download_sbd"),
    shell:
        "$PY workflow_scripts/data_download.py --url {params.url:q} --md5 {params.md5} "
        "--out {output} --log {log}"


# A prepared tree (data.voc2012.prepared: true) is the user's: no rule writes it, so Snakemake
# neither downloads the archives nor rebuilds the tree over it.
if not VOC["prepared"]:

    rule prepare_voc:
        input:
            voc=rules.download_voc.output[0],
            sbd=rules.download_sbd.output[0] if VOC["use_sbd"] else [],
        output:
            # the whole prepared tree is what the stages read and depend on (DATA_ROOT); naming
            # files inside it would make Snakemake create <root>/ImageSets/... before the job
            # runs, and the script take that folder for a finished extraction
            directory(VOC["root"]),
        params:
            out=lambda wildcards, output: str(Path(output[0]).parent),
            sbd=lambda w, input: f"--sbd-archive {input.sbd}" if input.sbd else "",
        log:
            "logs/prepare_voc.log",
        benchmark:
            bench_path("prepare_voc")
        conda:
            CONDA_ENV
        threads: 1
        resources:
            **gpu_resources("prepare_voc"),
        shell:
            "$PY workflow_scripts/data_prepare_voc.py --voc-archive {input.voc} {params.sbd} "
            "--out {params.out} --no-progress --log {log}"



# The VOC 2012 test images, for export_voc_test only (not in `all`): the official archive needs
# a login at the evaluation server, so its URL (a path or file:// URL of the copy the user
# downloaded, or a mirror) is theirs to give.
VOC_TEST_ROOT = str(Path(VOC["root"]).parent / "VOC2012test")


rule download_voc_test:
    output:
        f"{VOC['downloads']}/VOC2012test.tar",
    params:
        md5=f"--md5 {VOC['test_md5']}" if VOC["test_md5"] else "",
        url=untracked(VOC["test_url"] or ""),
        missing=(
            "config key data.voc2012.test_url: not set; the VOC 2012 test images "
            "(VOC2012test.tar) need a login at http://host.robots.ox.ac.uk:8080/ (the evaluation "
            "server): download the archive there, then set test_url to its path or file:// URL "
            "(test_md5 to its checksum), or copy it to "
            f"{VOC['downloads']}/VOC2012test.tar"
        ),
    log:
        "logs/download_voc_test.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("download_voc_test"),
    shell:
        "$PY workflow_scripts/data_download.py --url={params.url:q} {params.md5} "
        "--missing {params.missing:q} --out {output} --log {log}"


rule prepare_voc_test:
    input:
        rules.download_voc_test.output[0],
    output:
        directory(VOC_TEST_ROOT),
    log:
        "logs/prepare_voc_test.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("prepare_voc_test"),
    shell:
        "$PY workflow_scripts/data_prepare_voc_test.py --archive {input} --out {output} "
        "--no-progress --log {log}"


# COCO 2014: three zip archives, extracted beside the tree; the instance annotations become
# label masks in data.coco2014.shards convert_coco jobs (a cluster runs them side by side),
# gathered by prepare_coco into a VOC-layout tree (wsss_core/data/coco_prepare.py).
COCO = DATA_CFG["coco2014"]
COCO_ARCHIVES = {
    # archive -> (config key prefix, folder of the archive extracted)
    "train2014": ("train", "train2014"),
    "val2014": ("val", "val2014"),
    "annotations_trainval2014": ("annotations", "annotations"),
}
COCO_EXTRACTED = str(Path(COCO["root"]).parent / "coco2014_extracted")


scattergather:
    coco=COCO["shards"],


rule download_coco:
    output:
        f"{COCO['downloads']}/{{archive}}.zip",
    wildcard_constraints:
        archive="|".join(COCO_ARCHIVES),
    params:
        md5=lambda w: COCO[f"{COCO_ARCHIVES[w.archive][0]}_md5"],  # as in download_voc
        url=lambda w, input: COCO[f"{COCO_ARCHIVES[w.archive][0]}_url"],
    log:
        "logs/download_coco_{archive}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("download_coco"),
    shell:
        "$PY workflow_scripts/data_download.py --url {params.url:q} --md5 {params.md5} "
        "--out {output} --log {log}"


rule extract_coco:
    input:
        f"{COCO['downloads']}/{{archive}}.zip",
    output:
        directory(f"{COCO_EXTRACTED}/{{archive}}"),
    wildcard_constraints:
        archive="|".join(COCO_ARCHIVES),
    params:
        prefix=lambda w: COCO_ARCHIVES[w.archive][1],
    log:
        "logs/extract_coco_{archive}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("extract_coco"),
    shell:
        "$PY workflow_scripts/data_extract.py --archive {input} --out {output} "
        "--strip-prefix {params.prefix} --no-progress --log {log}"


COCO_SOURCES = {
    "annotations": f"{COCO_EXTRACTED}/annotations_trainval2014",
    "train": f"{COCO_EXTRACTED}/train2014",
    "val": f"{COCO_EXTRACTED}/val2014",
}


rule convert_coco:
    input:
        **COCO_SOURCES,
    output:
        temp(directory(f"{COCO_EXTRACTED}/shards/{{scatteritem}}")),
    params:
        shard=shard_args,
    log:
        f"logs/convert_coco/{{scatteritem}}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("convert_coco"),
    shell:
        "$PY workflow_scripts/data_convert_coco.py --annotations {input.annotations} "
        "--train-images {input.train} --val-images {input.val} {params.shard} --out {output} "
        "--log {log}"


rule prepare_coco:
    input:
        shards=gather.coco(f"{COCO_EXTRACTED}/shards/{{scatteritem}}"),
        train=COCO_SOURCES["train"],
        val=COCO_SOURCES["val"],
    output:
        directory(COCO["root"]),
    log:
        "logs/prepare_coco.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **gpu_resources("prepare_coco"),
    shell:
        "$PY workflow_scripts/data_prepare_coco.py --shards {input.shards} "
        "--train-images {input.train} --val-images {input.val} --out {output} --log {log}"


localrules:
    download_coco,


# Run by Snakemake itself, never submitted to a cluster: the downloads need the network of
# the login node; make_synthetic and make_labels take seconds, less than a job's scheduling.
localrules:
    download_voc,
    download_sbd,
    download_voc_test,
    make_synthetic,
    make_labels,
