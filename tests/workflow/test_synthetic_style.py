"""data.synthetic.style through Snakemake: the scenes family made by make_synthetic (a few
seconds: only the data rules run), the same files as the library writes, labelled by make_labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import (
    TINY_CONFIG,
    copy_workflow,
    files_under,
    output,
    read_ids,
    read_mask,
    run_config,
    snakemake,
    tail,
    with_values,
    write_config,
)

from wsss_core.data.palette import IGNORE_INDEX
from wsss_core.data.synthetic import generate_dataset


@pytest.mark.slow
def test_make_synthetic_writes_the_scenes_family(tmp_path: Path):
    workdir = copy_workflow(tmp_path / "workflow")
    syn = {"style": "scenes", "num_classes": 4, "image_size": 64, "num_train": 6, "num_val": 3,
           "seed": 2}  # fmt: skip
    config = with_values(run_config(workdir, TINY_CONFIG), {"run": "scenes", "data.synthetic": syn})
    configfile = write_config(workdir, "scenes.yaml", config)
    targets = ["results/scenes/labels/train.csv", "results/scenes/labels/val.csv"]
    proc = snakemake(workdir, *targets, "--cores", "1", "--configfile", configfile, timeout=600)
    assert proc.returncode == 0, tail(output(proc))

    root = workdir / "results/scenes/data/synthetic"
    assert read_ids(root / "classes.txt") == ["tree", "house", "ladder", "dumbbell"]
    # byte for byte what the library writes for the same keys
    generate_dataset(tmp_path / "library", **syn)
    ours = files_under(root, skip=[".snakemake_timestamp"])  # Snakemake's own marker
    library = files_under(tmp_path / "library")
    assert sorted(ours) == sorted(library)
    assert all(ours[rel].read_bytes() == library[rel].read_bytes() for rel in ours)
    # each image's labels are the classes of its mask
    for split, n in (("train", 6), ("val", 3)):
        table = pd.read_csv(workdir / f"results/scenes/labels/{split}.csv", dtype={"image_id": str})
        assert len(table) == n
        for row in table.itertuples(index=False):
            mask = read_mask(root / f"SegmentationClass/{row.image_id}.png")
            assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3, 4, IGNORE_INDEX}
            present = {int(v) for v in np.unique(mask) if 0 < v <= 4}
            assert present and {c + 1 for c in range(4) if row[c + 1] == 1} == present
