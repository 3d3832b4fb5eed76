"""Benchmark: one training step of the demo classifier, in one run.

Times a step (forward, loss, backward, AdamW) of ``hybrid_tiny`` on random images, in four
variants: the default memory format without the stem loss (the baseline), channels-last
memory (what ``wsss_core.classifier.train`` uses), channels-last with the stem's auxiliary
loss (``classifier.stem_loss``), and that in bfloat16 autocast (``classifier.precision``; fast
only where the CPU has native bfloat16, ``wsss_core.runtime.native_bf16``). Each is the median
of ``--repeats`` steps after warm-up steps, the variants interleaved so that a shared
machine's load falls on all alike. Printed: seconds per step of each and the ratios against
the baseline.

    .venv/bin/python bench/bench_classifier_step.py [--size 96] [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from wsss_core.classifier.model import build_classifier
from wsss_core.classifier.supervision import trainee, training_loss
from wsss_core.runtime import autocast, native_bf16

CPU = torch.device("cpu")
VARIANTS = {  # name: (channels-last, stem_loss, dtype)
    "default format": (False, 0.0, torch.float32),
    "channels-last": (True, 0.0, torch.float32),
    "channels-last + stem loss": (True, 1.0, torch.float32),
    "... + bf16 autocast": (True, 1.0, torch.bfloat16),
}


def make_step(size: int, batch: int, channels_last: bool, stem_loss: float, dtype: torch.dtype):
    """A closure running one training step; the same weights and inputs for every variant."""
    torch.manual_seed(0)
    model = build_classifier(
        {"backbone": "hybrid_tiny", "num_classes": 5, "img_size": size, "pretrained": False}
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    learner = trainee(model, stem_loss).to(memory_format=fmt).train()
    optimizer = torch.optim.AdamW(learner.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, size, size, generator=gen).contiguous(memory_format=fmt)
    targets = (torch.rand(batch, 5, generator=gen) < 0.4).float()

    def step() -> float:
        start = time.perf_counter()
        with autocast(CPU, dtype):
            loss = training_loss(learner, images, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = {name: make_step(args.size, args.batch, *spec) for name, spec in VARIANTS.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(step())
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["default format"]
    print(f"hybrid_tiny, {args.size} px, batch {args.batch}, {args.threads} threads, "
          f"native bfloat16: {native_bf16(CPU)}")  # fmt: skip
    for name, seconds in median.items():
        print(f"  {name:28s} {seconds:.4f} s/step  {base / seconds:.2f}x the default's speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
