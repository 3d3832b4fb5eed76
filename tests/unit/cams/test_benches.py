"""The benches: the CPU bench's baseline (bench/reference_lrp.py, a port of the reference's
ViT_LRP transformer attribution run one (image, class) at a time) gives our maps and the
bench runs; the GPU bench refuses to run without CUDA and runs tiny on the CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from test_relevance import images, plain_vit

from wsss_core.cams.relevance import explain

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("start_layer", [0, 1])
def test_reference_port_equals_explain(start_layer):
    reference_lrp = _load("reference_lrp")
    model = plain_vit(depth=3)
    x = images(2, 16)
    classes = [[2, 0], [1, 3]]
    maps = explain(model, x, classes, "transformer_attribution", start_layer)
    port = reference_lrp.ReferenceViT(model)
    for b, class_list in enumerate(classes):
        for j, c in enumerate(class_list):
            expected = port.transformer_attribution(x[b : b + 1], c, start_layer)[0]
            scale = expected.abs().max().item()
            assert scale > 0
            got = maps[b][j].flatten()
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 * scale)


def test_bench_runs_and_reports_the_ratio_and_the_work(capsys):
    bench = _load("bench_relevance")
    args = ["--model", "vit_tiny_patch16_224", "--size", "32", "--repeats", "1", "--no-memory"]
    assert bench.main(args + ["--flops"]) == 0
    out = capsys.readouterr().out
    assert "speed-up ours / reference" in out
    deviation = float(out.split("each map's max): ")[1].split()[0])
    assert deviation < 1e-3
    # per map the reference runs a forward, a backward with parameter gradients and a
    # relevance pass of 8 products per linear layer; ours shares the forward and takes 3
    work = float(out.split("work ratio reference / ours: ")[1].split("x")[0])
    assert 2 < work < 5
    gflop = [float(line.split(": ")[1].split()[0]) for line in out.splitlines() if "GFLOP" in line]
    assert len(gflop) == 2 and all(g > 0 for g in gflop)


def test_gpu_bench_says_no_cuda_device_and_exits_cleanly(monkeypatch, capsys):
    bench = _load("bench_relevance_gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_gpu_bench_tiny_smoke_run_on_the_cpu(capsys):
    """The preset's scales and flip on a tiny ViT: every mode runs, autocast maps are finite
    and compared with fp32."""
    bench = _load("bench_relevance_gpu")
    args = ["--device", "cpu", "--tiny", "--images", "2", "--batch", "1", "--repeats", "1"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "scales [1.0, 0.5, 1.5, 2.0], flip True" in out
    for mode in ("fp32", "bf16", "fp16"):
        assert f"\n{mode} " in out
    assert out.count("non-finite maps 0") == 2
