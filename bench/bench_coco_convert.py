"""Benchmark: COCO conversion speed (convert_coco shards running side by side), in images/s.

Builds a synthetic COCO 2014 of ``--images`` 640 x 480 images with COCO train2014's density
(7.3 annotations per image: polygons of 10 to 40 vertices of random sizes, 1 % crowd regions as
uncompressed RLE), times ``load_instances`` on its instance file (MB/s: the real
instances_train2014.json and instances_val2014.json, 490 MB together, are loaded by every
shard), then runs ``--shards`` convert_coco processes at once
(workflow_scripts/data_convert_coco.py, as Snakemake starts them) and prints wall time and
images per second, with and without the loading. The images are hard links of one JPEG: the
conversion reads only their headers. Print the load average beside the numbers: on a shared
machine they scale with it.

    .venv/bin/python bench/bench_coco_convert.py [--images 2000] [--shards 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.data.coco import COCO_CATEGORIES

REPO = Path(__file__).resolve().parents[1]
H, W = 480, 640


def polygon(rng: np.random.Generator) -> list[float]:
    """A star-shaped polygon of 10..40 vertices around a random centre, 10..200 px across."""
    n = int(rng.integers(10, 41))
    cx, cy = rng.uniform(0, W), rng.uniform(0, H)
    radius = rng.uniform(5, 100)
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    r = radius * rng.uniform(0.6, 1.0, n)
    xs = np.clip(cx + r * np.cos(angles), 0, W - 1)
    ys = np.clip(cy + r * np.sin(angles), 0, H - 1)
    return np.round(np.stack([xs, ys], 1).reshape(-1), 2).tolist()


def crowd_rle(rng: np.random.Generator) -> dict:
    mask = np.zeros((H, W), np.uint8)
    top, left = int(rng.integers(0, H // 2)), int(rng.integers(0, W // 2))
    mask[top : top + H // 3, left : left + W // 3] = 1
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": [H, W]}


def instances(stems: list[str], rng: np.random.Generator) -> dict:
    images, annotations = [], []
    cats = [c for c, _ in COCO_CATEGORIES]
    for number, stem in enumerate(stems, 1):
        images.append({"id": number, "file_name": f"{stem}.jpg", "height": H, "width": W})
        for _ in range(int(rng.poisson(7.3)) + 1):
            crowd = rng.random() < 0.01
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": int(rng.choice(cats)),
                    "segmentation": crowd_rle(rng) if crowd else [polygon(rng)],
                    "iscrowd": int(crowd),
                }
            )
    categories = [{"id": c, "name": n} for c, n in COCO_CATEGORIES]
    return {"images": images, "annotations": annotations, "categories": categories}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images converted")
    parser.add_argument("--shards", type=int, default=2, help="processes at once")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = {split: tmp / f"{split}2014" for split in ("train", "val")}
        for folder in folders.values():
            folder.mkdir()
        one = tmp / "one.jpg"
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(one)
        stems = [f"COCO_train2014_{i:012d}" for i in range(args.images)]
        for stem in stems:
            os.link(one, folders["train"] / f"{stem}.jpg")
        data = instances(stems, rng)
        ann_dir = tmp / "annotations"
        ann_dir.mkdir()
        (ann_dir / "instances_train2014.json").write_text(json.dumps(data))
        # val: one image, so that both files exist
        val = instances(["COCO_val2014_000000000001"], rng)
        os.link(one, folders["val"] / "COCO_val2014_000000000001.jpg")
        (ann_dir / "instances_val2014.json").write_text(json.dumps(val))
        size_mb = (ann_dir / "instances_train2014.json").stat().st_size / 1e6
        print(
            f"instances_train2014.json: {len(data['images'])} images, "
            f"{len(data['annotations'])} annotations, {size_mb:.0f} MB"
        )
        # the loading alone, in this process
        from wsss_core.data.coco_prepare import load_instances

        started = time.perf_counter()
        load_instances(ann_dir / "instances_train2014.json")
        load_seconds = time.perf_counter() - started
        print(f"load_instances: {load_seconds:.2f} s ({size_mb / load_seconds:.0f} MB/s)")

        print(f"load average (1, 5, 15 min): {os.getloadavg()}")
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "workflow_scripts" / "data_convert_coco.py"),
                    "--annotations", str(ann_dir),
                    "--train-images", str(folders["train"]),
                    "--val-images", str(folders["val"]),
                    "--shard", str(i), "--num-shards", str(args.shards),
                    "--out", str(tmp / f"shard{i}"),
                    "--log", str(tmp / f"shard{i}.log"),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(args.shards)
        ]  # fmt: skip
        codes = [p.wait() for p in procs]
        seconds = time.perf_counter() - started
        if any(codes):
            sys.exit(f"a shard failed: {codes}; {(tmp / 'shard0.log').read_text()[-2000:]}")
        converted = args.images + 1
        pngs = sum(1 for i in range(args.shards) for _ in (tmp / f"shard{i}").rglob("*.png"))
        assert pngs == converted, (pngs, converted)
        rate = converted / seconds
        net = converted / max(seconds - load_seconds, 1e-9)
        print(f"load average (1, 5, 15 min): {os.getloadavg()}")
        print(
            f"{args.shards} convert_coco processes at once: {converted} images in "
            f"{seconds:.1f} s = {rate:.1f} images/s; {net:.1f} images/s without the "
            f"{load_seconds:.1f} s load"
        )


if __name__ == "__main__":
    main()
