"""Speed and peak memory of batched relevance maps against a one-class-at-a-time loop.

ViT-S/16 at 224 px (``timm.create_model("vit_small_patch16_224", pretrained=False)``,
random weights: speed does not depend on them), 3 classes per image. "batched" is one
``explain`` call for the whole batch (shared forward, all classes in one backward and one
relevance pass); "loop" calls the same ``explain`` once per (image, class) pair. Both are
timed in this run and the ratio printed. Peak memory: CUDA max allocated when on a GPU,
else the peak resident set size of a fresh subprocess per variant, and ("extra") that peak
minus the resident size once the model and images are in memory.

    .venv/bin/python bench/bench_relevance.py [--images 2] [--repeats 2] [--device auto]
        [--threads 1] [--methods transformer_attribution full_lrp ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import timm
import torch

from wsss_core.cams.methods import METHODS
from wsss_core.cams.relevance import explain
from wsss_core.runtime import select_device, set_threads

CLASSES = (3, 7, 11)


def _setup(args: dict) -> tuple[torch.nn.Module, torch.Tensor, list[list[int]]]:
    set_threads(args["threads"])
    torch.manual_seed(0)
    device = select_device(args["device"])
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=20)
    model = model.to(device).eval()
    images = torch.randn(args["images"], 3, 224, 224, device=device)
    classes = [list(CLASSES) for _ in range(args["images"])]
    return model, images, classes


def _run(model, images, classes, method: str, mode: str) -> None:
    if mode == "batched":
        explain(model, images, classes, method)
    else:
        for b, class_list in enumerate(classes):
            for c in class_list:
                explain(model, images[b : b + 1], [[c]], method)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _current_rss_mb() -> float:
    """Resident set size now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(args: dict, method: str, mode: str) -> dict:
    """Seconds per repeat (best of ``repeats``, after one warm-up) and peak memory."""
    model, images, classes = _setup(args)
    device = images.device
    base_mb = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if base_mb is None:
        base_mb = _current_rss_mb()
    _run(model, images, classes, method, mode)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = float("inf")
    for _ in range(args["repeats"]):
        _sync(device)
        start = time.perf_counter()
        _run(model, images, classes, method, mode)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    maps = sum(len(c) for c in classes)
    return {
        "seconds": best,
        "maps_per_s": maps / best,
        "peak_mb": peak_mb,
        "extra_mb": peak_mb - base_mb,
    }


def _child(args: dict, method: str, mode: str, queue) -> None:
    queue.put(measure(args, method, mode))


def measure_isolated(args: dict, method: str, mode: str) -> dict:
    """``measure`` in a fresh process, so that each peak RSS is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(args, method, mode, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = vars(parser.parse_args(argv))
    device = select_device(args["device"])
    print(
        f"ViT-S/16 224px, {args['images']} images x {len(CLASSES)} classes, device {device}, "
        f"threads {args['threads']}"
    )
    header = f"{'method':<25}{'batched maps/s':>16}{'loop maps/s':>14}{'speed-up':>10}"
    header += f"{'peak MB b/l':>14}{'extra MB b/l':>14}"
    print(header)
    rows = []
    for method in args["methods"]:
        runner = measure if device.type == "cuda" else measure_isolated
        batched = runner(args, method, "batched")
        loop = runner(args, method, "loop")
        ratio = batched["maps_per_s"] / loop["maps_per_s"]
        print(
            f"{method:<25}{batched['maps_per_s']:>16.2f}{loop['maps_per_s']:>14.2f}"
            f"{ratio:>9.2f}x{batched['peak_mb']:>8.0f}/{loop['peak_mb']:<5.0f}"
            f"{batched['extra_mb']:>8.0f}/{loop['extra_mb']:<5.0f}",
            flush=True,
        )
        rows.append({"method": method, "batched": batched, "loop": loop, "speedup": ratio})
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
