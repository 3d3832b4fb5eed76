"""Relevance maps per second on one GPU, as the VOC preset extracts them: fp32 and autocast.

ViT-B/16 at 448 px as ``configs/voc2012_vit_b16.yaml`` builds it (``classifier.backbone``,
``img_size``, ``patch_size``; random weights: speed does not depend on them), explained with
the preset's multi-scale and flip inference (``cams.scales`` [1.0, 0.5, 1.5, 2.0],
``cams.flip``, ``cams.start_layer``): every map is the sum of 8 maps (4 scales x 2 flips)
resized to the 28 x 28 grid, and each ``explain`` call takes a batch of images with their
flips. Images are random, 2 classes each. Three modes, each timed (best of ``--repeats``
after a warm-up) with its peak CUDA memory: fp32, and ``torch.autocast`` in bfloat16 and
float16 (the forward pass and the attention gradients in the low precision, the relevance
walk in fp32: see ``wsss_core.cams.relevance.explain``). For each autocast mode it prints
how far its maps are from fp32: the largest and the median over maps of
``max |map - map_fp32| / max |map_fp32|``, and how many maps are not finite. The LRP rules
divide by sums of contributions that can be small, so they amplify the low precision's
rounding; the deviation says by how much on this model.

Batches of 2 images (4 with their flips; at scale 2.0, 896 px, that is 3137 tokens per
image and an estimated 60 GB at the peak in fp32); a batch that does not fit is split in halves
until it does (the batch used is printed).
Sized to finish in well under 5 minutes on one H200 (fp32 is the slowest mode). Without a
CUDA device it says so and exits (status 0); ``--device cpu --tiny`` runs the same code on a
tiny ViT on the CPU as a smoke test.

    .venv/bin/python bench/bench_relevance_gpu.py [--images 8] [--batch 2] [--repeats 2]
        [--modes fp32 bf16 fp16] [--method transformer_attribution] [--device cuda]
        [--config configs/voc2012_vit_b16.yaml] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's wsss_core

from wsss_core.cams.methods import METHODS  # noqa: E402
from wsss_core.cams.multiscale import explain_multiscale  # noqa: E402
from wsss_core.classifier.model import build_classifier  # noqa: E402

PRESET = HERE.parent / "configs" / "voc2012_vit_b16.yaml"
MODES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
NUM_CLASSES = 20
CLASSES_PER_IMAGE = (4, 14)  # two VOC classes per image: car, person
TINY = {"backbone": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 16}


def preset(path: Path, tiny: bool) -> tuple[dict, dict]:
    """(classifier config, cams settings) of the preset; ``tiny`` swaps in a tiny ViT."""
    cfg = yaml.safe_load(path.read_text())
    classifier = {key: cfg["classifier"][key] for key in ("backbone", "img_size", "patch_size")}
    if tiny:
        classifier.update(TINY)
    classifier.update(num_classes=NUM_CLASSES, pretrained=False)
    cams = cfg["cams"]
    settings = {
        "scales": [float(s) for s in cams["scales"]],
        "flip": bool(cams["flip"]),
        "start_layer": int(cams.get("start_layer", 1)),
    }
    return classifier, settings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


def run_all(model, images, classes, method, settings, dtype, batch) -> torch.Tensor:
    """Every image's maps, ``batch`` images per ``explain_multiscale`` call: [P, h, w]."""
    maps = []
    for start in range(0, images.shape[0], batch):
        with _autocast(images.device, dtype):
            maps += explain_multiscale(
                model, images[start : start + batch], classes[start : start + batch], method,
                settings["scales"], settings["flip"], settings["start_layer"],
            )  # fmt: skip
    return torch.cat(maps)


def measure(model, images, classes, method, settings, mode, batch, repeats) -> dict:
    """Best seconds over ``repeats`` (after a warm-up, which also finds a batch that fits),
    peak memory and the maps of one mode."""
    device, dtype = images.device, MODES[mode]
    while True:
        try:
            run_all(model, images, classes, method, settings, dtype, batch)  # warm-up
            break
        except RuntimeError as err:  # (the failed pass's tensors are freed after this clause)
            if not _is_oom(err) or batch == 1:
                raise
        batch //= 2
        torch.cuda.empty_cache()
        print(f"  {mode}: out of memory, batches of {batch} images", flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        maps = run_all(model, images, classes, method, settings, dtype, batch)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"seconds": best, "maps_per_s": maps.shape[0] / best, "peak_mb": peak_mb,
            "batch": batch, "maps": maps}  # fmt: skip


def deviation(maps: torch.Tensor, reference: torch.Tensor) -> dict:
    """max and median over maps of max |maps - reference| / max |reference|; non-finite maps."""
    finite = torch.isfinite(maps).flatten(1).all(dim=1)
    scale = reference.abs().flatten(1).amax(dim=1).clamp(min=torch.finfo(reference.dtype).tiny)
    rel = (maps - reference).abs().flatten(1).amax(dim=1) / scale
    rel = rel[finite]
    return {
        "max": float(rel.max()) if rel.numel() else float("nan"),
        "median": float(rel.median()) if rel.numel() else float("nan"),
        "non_finite": int((~finite).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images in all")
    parser.add_argument("--batch", type=int, default=2, help="images per explain call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--method", default="transformer_attribution", choices=list(METHODS))
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--config", type=Path, default=PRESET)
    parser.add_argument("--tiny", action="store_true", help="a tiny ViT at 32 px (smoke test)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (a smoke run on the CPU: "
              "--device cpu --tiny)")  # fmt: skip
        return 0
    if min(args.images, args.batch, args.repeats) < 1:
        parser.error("--images, --batch and --repeats must be >= 1")
    device = torch.device(args.device)
    classifier_cfg, settings = preset(args.config, args.tiny)
    torch.manual_seed(0)
    model = build_classifier(classifier_cfg).to(device).eval()
    side = int(classifier_cfg["img_size"])
    images = torch.randn(args.images, 3, side, side, device=device)
    classes = [list(CLASSES_PER_IMAGE) for _ in range(args.images)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{classifier_cfg['backbone']} {side}px on {name}: {args.method}, {args.images} images"
        f" x {len(CLASSES_PER_IMAGE)} classes, scales {settings['scales']}, flip "
        f"{settings['flip']}, start_layer {settings['start_layer']}; batches of {args.batch}"
        f" images (x2 with flips); TF32 matmul {torch.backends.cuda.matmul.allow_tf32}",
        flush=True,
    )
    results, fp32_maps = {}, None
    for mode in args.modes:
        row = measure(model, images, classes, args.method, settings, mode, args.batch,
                      args.repeats)  # fmt: skip
        maps = row.pop("maps").float()
        if mode == "fp32":
            fp32_maps = maps
        elif fp32_maps is not None:
            row["deviation_from_fp32"] = deviation(maps, fp32_maps)
        else:
            row["non_finite"] = int((~torch.isfinite(maps).flatten(1).all(dim=1)).sum())
        results[mode] = row
        peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.0f} MiB"
        line = (f"{mode:<5} {row['maps_per_s']:8.2f} maps/s  {row['seconds']:7.2f} s  "
                f"peak {peak}  batch {row['batch']}")  # fmt: skip
        if "deviation_from_fp32" in row:
            dev = row["deviation_from_fp32"]
            line += (f"  deviation from fp32: max {dev['max']:.2e}, median "
                     f"{dev['median']:.2e}, non-finite maps {dev['non_finite']}")  # fmt: skip
        print(line, flush=True)
    if "fp32" in results:
        for mode, row in results.items():
            if mode != "fp32":
                speedup = row["maps_per_s"] / results["fp32"]["maps_per_s"]
                print(f"{mode} / fp32: {speedup:.2f}x")
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
