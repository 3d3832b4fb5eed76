"""Speed of our transformer attribution against the reference algorithm, measured in one run.

ViT-B/16 at 224 px (``timm.create_model("vit_base_patch16_224", pretrained=False)``, random
weights: speed does not depend on them), 3 classes per image, ``start_layer`` 1 (the paper's
evaluation). "ours" is one ``explain(model, images, classes, "transformer_attribution")``
call for the whole batch; "reference" is ``bench/reference_lrp.py``, a plain port of
hila-chefer/Transformer-Explainability's ``ViT_LRP`` + ``layers_ours`` run as the reference
runs: one forward, one backward and one relevance pass per (image, class), in a loop, on the
same weights in this process. Both are timed in this run, in turns (best of ``--repeats``
each, after a warm-up), so that both see the same machine load, and the ratio of maps per
second is printed with the largest deviation of our maps from the reference's relative to
each reference map's maximum, and the load average before and after. Peak memory: CUDA
max allocated on a GPU, else the peak resident set size of a fresh subprocess per variant
and ("extra") that peak minus the resident size once the model and images are in memory.

The ratio depends on the machine: both sides are mostly matrix products, and where those
run at full speed it is about the ratio of their work (see README, Benchmarks); on a
loaded machine the reference's many small operations cost it more. ``--flops`` also
counts, for one batch of each side, the floating-point operations of the matrix products
and convolutions (``torch.profiler``'s ``with_flops``) and the tensor operations run: the
ratio of work, which does not depend on the machine or its load.

    .venv/bin/python bench/bench_relevance.py [--images 2] [--repeats 2] [--threads 2]
        [--device cpu] [--model vit_base_patch16_224] [--size 224] [--no-memory] [--flops]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import timm
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this checkout's wsss_core; reference_lrp

from reference_lrp import ReferenceViT  # noqa: E402

from wsss_core.cams.relevance import explain  # noqa: E402
from wsss_core.runtime import select_device, set_threads  # noqa: E402

CLASSES = (3, 7, 11)
METHOD = "transformer_attribution"
START_LAYER = 1


def _setup(args: dict) -> tuple[torch.nn.Module, torch.Tensor, list[list[int]]]:
    set_threads(args["threads"])
    torch.manual_seed(0)
    device = select_device(args["device"])
    model = timm.create_model(
        args["model"], pretrained=False, num_classes=20, img_size=args["size"]
    )
    model = model.to(device).eval()
    images = torch.randn(args["images"], 3, args["size"], args["size"], device=device)
    classes = [list(CLASSES) for _ in range(args["images"])]
    return model, images, classes


def run(model, images, classes, mode: str, reference: ReferenceViT | None = None) -> torch.Tensor:
    """All maps of the batch, pair by pair [P, L]: ours in one call, or the reference loop."""
    if mode == "ours":
        maps = explain(model, images, classes, METHOD, START_LAYER)
        return torch.cat([m.flatten(1) for m in maps])
    reference = reference or ReferenceViT(model)
    maps = []
    for b, class_list in enumerate(classes):
        for c in class_list:
            maps.append(reference.transformer_attribution(images[b : b + 1], c, START_LAYER))
    return torch.cat(maps)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _current_rss_mb() -> float:
    """Resident set size now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    """Peak resident set size of this process image (Linux ``VmHWM``), in MiB. (Unlike
    ``getrusage``'s ``ru_maxrss`` it does not carry the parent's peak over a spawn.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def time_both(args: dict) -> dict:
    """Seconds per batch of ours and of the reference loop, timed in turns in this process
    (best of ``repeats`` each, after a warm-up), so that both see the same machine load;
    and the maps of both."""
    model, images, classes = _setup(args)
    reference = ReferenceViT(model)
    device = images.device
    maps = {"ours": run(model, images, classes, "ours")}  # warm-up
    reference.transformer_attribution(images[:1], classes[0][0], START_LAYER)  # warm-up
    best = {"ours": float("inf"), "reference": float("inf")}
    for _ in range(args["repeats"]):
        for mode in ("ours", "reference"):
            _sync(device)
            start = time.perf_counter()
            maps[mode] = run(model, images, classes, mode, reference)
            _sync(device)
            best[mode] = min(best[mode], time.perf_counter() - start)
    return {mode: {"seconds": best[mode], "maps": maps[mode]} for mode in best}


def peak_memory(args: dict, mode: str) -> dict:
    """Peak memory of one batch of ``mode``: CUDA max allocated, else the peak RSS of this
    (fresh) process and that peak less the resident size before the batch."""
    model, images, classes = _setup(args)
    reference = ReferenceViT(model) if mode == "reference" else None
    device = images.device
    if device.type == "cuda":
        base_mb = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base_mb = _current_rss_mb()
    run(model, images, classes, mode, reference)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = _peak_rss_mb()
    return {"peak_mb": peak_mb, "extra_mb": peak_mb - base_mb}


def _child(args: dict, mode: str, queue) -> None:
    queue.put(peak_memory(args, mode))


def peak_memory_isolated(args: dict, mode: str) -> dict:
    """``peak_memory`` in a fresh process, so that each peak RSS is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(args, mode, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def count_work(args: dict, mode: str) -> dict:
    """GFLOP of the matrix products and convolutions, and tensor operations (``aten::``
    calls), per map of one batch of ``mode``, as ``torch.profiler`` counts them."""
    from torch.profiler import profile

    model, images, classes = _setup(args)
    reference = ReferenceViT(model) if mode == "reference" else None
    with profile(with_flops=True) as prof:
        run(model, images, classes, mode, reference)
    events = prof.key_averages()
    maps = sum(len(c) for c in classes)
    flops = sum(e.flops for e in events if e.flops)
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    return {"gflop_per_map": flops / maps / 1e9, "ops_per_map": calls / maps}


def max_relative_deviation(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max over maps of max |ours - reference| / max |reference| (per map)."""
    ours, reference = ours.double().cpu(), reference.double().cpu()
    scale = reference.abs().amax(dim=1).clamp(min=torch.finfo(reference.dtype).tiny)
    return float(((ours - reference).abs().amax(dim=1) / scale).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the peak-memory runs"
    )
    parser.add_argument(
        "--flops", action="store_true", help="count the work of one batch of each side"
    )
    args = vars(parser.parse_args(argv))
    device = select_device(args["device"])
    print(
        f"{args['model']} {args['size']}px, {args['images']} images x {len(CLASSES)} classes, "
        f"{METHOD} (start_layer {START_LAYER}), device {device}, threads {args['threads']}",
        flush=True,
    )
    load_before = os.getloadavg()[0]
    timed = time_both(args)
    load_after = os.getloadavg()[0]
    ours, reference = timed["ours"], timed["reference"]
    maps = args["images"] * len(CLASSES)
    for name, row in timed.items():
        row["maps_per_s"] = maps / row["seconds"]
        if args["memory"]:
            memory = peak_memory if device.type == "cuda" else peak_memory_isolated
            row.update(memory(args, name))
        if args["flops"]:
            row.update(count_work(args, name))
    ratio = ours["maps_per_s"] / reference["maps_per_s"]
    deviation = max_relative_deviation(ours["maps"], reference["maps"])
    header = f"{'variant':<12}{'maps/s':>10}{'s/batch':>10}"
    header += f"{'peak MB':>10}{'extra MB':>10}" if args["memory"] else ""
    print(header)
    for name, row in timed.items():
        line = f"{name:<12}{row['maps_per_s']:>10.3f}{row['seconds']:>10.2f}"
        if args["memory"]:
            line += f"{row['peak_mb']:>10.0f}{row['extra_mb']:>10.0f}"
        print(line)
    print(f"speed-up ours / reference: {ratio:.2f}x")
    if args["flops"]:
        for name, row in timed.items():
            print(
                f"{name}: {row['gflop_per_map']:.4g} GFLOP per map (matrix products and "
                f"convolutions), {row['ops_per_map']:.0f} tensor operations per map"
            )
        work = reference["gflop_per_map"] / ours["gflop_per_map"]
        print(f"work ratio reference / ours: {work:.2f}x")
        summary_work = work
    else:
        summary_work = None
    print(f"load average (1 min) before / after timing: {load_before:.1f} / {load_after:.1f}")
    print(
        "max deviation of our maps from the reference's (relative to each map's max): "
        f"{deviation:.2e}"
    )
    summary = {k: v for k, v in args.items()}
    for name, row in (("ours", ours), ("reference", reference)):
        summary[name] = {k: v for k, v in row.items() if k != "maps"}
    summary.update(speedup=ratio, max_relative_deviation=deviation, load=[load_before, load_after])
    if summary_work is not None:
        summary["work_ratio"] = summary_work
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
