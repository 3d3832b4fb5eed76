"""Run-time choices (wsss_core.runtime): GPU claims that spread side-by-side jobs over the GPUs;
the training precision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from workflow_utils import REPO

from wsss_core.cli import UserError
from wsss_core.runtime import autocast, claim_gpu, cpu_flags, training_dtype

HOLDER = """
import sys, time
from wsss_core.runtime import claim_gpu
print(claim_gpu(int(sys.argv[1]), sys.argv[2]), flush=True)
sys.stdin.read()  # hold the claim until the test closes stdin
"""


def start_holder(count: int, lock_dir: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(count), str(lock_dir)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, int(proc.stdout.readline())


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


def test_side_by_side_jobs_take_different_gpus(tmp_path):
    first, gpu_a = start_holder(2, tmp_path)
    second, gpu_b = start_holder(2, tmp_path)
    assert (gpu_a, gpu_b) == (0, 1)
    release(first)  # GPU 0 is free again: the next job takes it
    third, gpu_c = start_holder(2, tmp_path)
    assert gpu_c == 0
    release(second)
    release(third)


def test_a_claim_is_held_by_the_process(tmp_path):
    holder, gpu = start_holder(3, tmp_path)
    assert gpu == 0
    assert claim_gpu(3, tmp_path) == 1  # this process: GPU 0 is held elsewhere
    release(holder)
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("wsss-gpu-")


CPU = torch.device("cpu")
NATIVE, PLAIN = frozenset({"fpu", "avx512f", "avx512_bf16"}), frozenset({"fpu", "avx2"})


def test_cpu_flags_read_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize(
    ("precision", "flags", "dtype"),
    [
        ("fp32", NATIVE, torch.float32),
        ("bf16", NATIVE, torch.bfloat16),
        ("auto", NATIVE, torch.bfloat16),
        ("auto", PLAIN, torch.float32),
        ("fp32", PLAIN, torch.float32),
    ],
)
def test_training_dtype(precision, flags, dtype):
    assert training_dtype(precision, CPU, "classifier.precision", flags) == dtype


def test_bf16_without_native_support_names_the_key():
    with pytest.raises(UserError, match="classifier.precision is bf16 .* auto or fp32"):
        training_dtype("bf16", CPU, "classifier.precision", PLAIN)
    with pytest.raises(UserError, match="config key classifier.precision: must be one of"):
        training_dtype("fp16", CPU, "classifier.precision", NATIVE)


def test_autocast_is_bf16_matmuls_with_fp32_losses_and_off_for_fp32():
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(16, 4), torch.randn(8, 16)
    targets = (torch.rand(8, 4) < 0.5).float()
    exact = layer(x)
    with autocast(CPU, torch.float32):
        assert torch.equal(layer(x), exact)
    with autocast(CPU, torch.bfloat16):
        logits = layer(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.allclose(logits.float(), exact, atol=0.05)
