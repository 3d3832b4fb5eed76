"""Run-time choices (wsss_core.runtime): GPU claims that spread side-by-side jobs over the GPUs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from workflow_utils import REPO

from wsss_core.runtime import claim_gpu

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
