"""Benchmark: the sparse random walk against PSA's dense formulation, in one run.

Both variants compute maps x T^(2^logt) on the same random inputs: by default a 56 x 56 grid
(448 px at stride 8) and 21 channels, with the walk settings (radius, beta, logt) of the VOC
preset's ``walk`` section (configs/voc2012_vit_b16.yaml). Each variant runs in its own subprocess so
that its peak memory can be read from the kernel: the peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) after the walk minus the peak before it, with the inputs
already built and torch warmed up; torch's allocations are counted because the OS sees them
(tracemalloc would not). Times are the best of ``--repeats`` runs. Printed: time and peak
memory of each, the speed ratio (dense / sparse) and the largest relative difference between
the two results.

    .venv/bin/python bench/bench_random_walk.py [--size 56] [--channels 21] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from wsss_core.walk.walk import random_walk, random_walk_dense

WALKS = {"sparse": random_walk, "dense": random_walk_dense}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
PRESET = Path(__file__).resolve().parents[1] / "configs" / "voc2012_vit_b16.yaml"


def preset_walk() -> dict:
    """The VOC preset's walk settings, the defaults of --radius, --beta and --logt."""
    return yaml.safe_load(PRESET.read_text())["walk"]


def make_inputs(args: argparse.Namespace, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(args.channels, args.size, args.size, generator=gen, dtype=torch.float64)
    feats = 0.3 * torch.randn(args.dim, args.size, args.size, generator=gen, dtype=torch.float64)
    return maps.to(dtype), feats.to(dtype)


def run_variant(args: argparse.Namespace) -> None:
    """Child process: time one variant, measure its peak memory, save its result."""
    torch.set_num_threads(args.threads)
    walk = WALKS[args.variant]
    maps, feats = make_inputs(args, DTYPES[args.dtype])
    params = {"radius": args.radius, "beta": args.beta, "logt": args.logt}
    small = 8  # warm up kernels and thread pools on a small grid
    walk(maps[:, :small, :small], feats[:, :small, :small], **params)
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = walk(maps, feats, **params)
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib
    torch.save(out, args.out)
    print(json.dumps({"time_s": min(times), "peak_mib": peak_kib / 1024}))


def spawn(args: argparse.Namespace, variant: str, dtype: str, out: Path, repeats: int) -> dict:
    cmd = [
        sys.executable, __file__, "--child", "--variant", variant, "--dtype", dtype,
        "--out", str(out), "--repeats", str(repeats),
        "--size", str(args.size), "--channels", str(args.channels), "--dim", str(args.dim),
        "--radius", str(args.radius), "--beta", str(args.beta), "--logt", str(args.logt),
        "--threads", str(args.threads),
    ]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    walk = preset_walk()
    parser.add_argument("--size", type=int, default=56, help="grid side (56 = 448 px at stride 8)")
    parser.add_argument("--channels", type=int, default=21)
    parser.add_argument("--dim", type=int, default=448, help="feature dimension (PSA: 448)")
    parser.add_argument("--radius", type=int, default=walk["radius"])
    parser.add_argument("--beta", type=float, default=walk["beta"])
    parser.add_argument("--logt", type=int, default=walk["logt"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="sparse runs (dense: 1)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=DTYPES)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=WALKS, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=DTYPES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_variant(args)
        return 0

    n = args.size * args.size
    print(
        f"random walk: {args.size}x{args.size} grid (N={n}), {args.channels} channels, "
        f"D={args.dim}, radius {args.radius}, beta {args.beta}, logt {args.logt} "
        f"({2**args.logt} steps), {args.threads} threads, torch {torch.__version__}"
    )
    print("peak memory: peak RSS during the walk - peak RSS before it (getrusage, 1 process each)")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes:
            res = {}
            for variant in ("sparse", "dense"):
                repeats = args.repeats if variant == "sparse" else 1
                res[variant] = spawn(args, variant, dtype, Path(tmp) / f"{variant}.pt", repeats)
            sparse = torch.load(Path(tmp) / "sparse.pt")
            dense = torch.load(Path(tmp) / "dense.pt")
            rel = ((sparse - dense).abs() / dense.abs().clamp(min=1e-300)).max().item()
            for variant in ("sparse", "dense"):
                print(
                    f"  {dtype:8s} {variant:6s} time {res[variant]['time_s']:8.3f} s   "
                    f"peak memory {res[variant]['peak_mib']:8.1f} MiB"
                )
            speed = res["dense"]["time_s"] / res["sparse"]["time_s"]
            mem = res["dense"]["peak_mib"] / max(res["sparse"]["peak_mib"], 1e-3)
            print(
                f"  {dtype:8s} dense / sparse: time {speed:.1f}x, peak memory {mem:.1f}x "
                f"(above 1: sparse is faster / smaller); max relative difference {rel:.2e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
