"""Run-time choices shared by every stage: device, precision, seeding, threads."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import torch

from wsss_core.cli import UserError

# the lock file of the GPU this process claimed (held open until the process ends)
_claimed: IO[str] | None = None


def claim_gpu(count: int, lock_dir: str | Path | None = None) -> int:
    """The index of a GPU no other job of this user holds, claimed until this process ends.

    Each of the ``count`` GPUs has a lock file (``wsss-gpu-<uid>-<i>.lock`` in the temporary
    folder); the first one whose lock is free is taken. Jobs that run side by side on a
    multi-GPU workstation (``snakemake --resources gpu=N``) thus spread over the GPUs instead of
    all landing on the first. When every GPU is held (more jobs than GPUs), the job waits for
    the one numbered by its process id."""
    global _claimed
    folder = Path(lock_dir or tempfile.gettempdir())
    handles = [open(folder / f"wsss-gpu-{os.getuid()}-{i}.lock", "a") for i in range(count)]
    chosen = None
    for index, handle in enumerate(handles):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        chosen = index
        break
    if chosen is None:
        chosen = os.getpid() % count
        fcntl.flock(handles[chosen], fcntl.LOCK_EX)
    for index, handle in enumerate(handles):
        if index != chosen:
            handle.close()
    _claimed = handles[chosen]
    return chosen


def select_device(preference: str = "auto") -> torch.device:
    """Return the device to compute on: CUDA when present (``auto``), else CPU.

    ``preference`` is ``auto``, ``cpu`` or ``cuda`` (optionally ``cuda:N``). ``auto`` with
    several GPUs visible claims a free one (``claim_gpu``). Asking for CUDA on a machine
    without it is an error that says so.
    """
    if preference == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        return torch.device(f"cuda:{claim_gpu(count)}" if count > 1 else "cuda")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"device '{preference}' was asked for but CUDA is not available here; "
            "set the config key device to auto (or cpu), or run on a machine with a GPU"
        )
    if preference != "cpu" and not preference.startswith("cuda"):
        raise ValueError(
            f"config key device: must be 'auto', 'cpu' or 'cuda[:N]', got '{preference}'"
        )
    return torch.device(preference)


PRECISIONS = ("fp32", "bf16", "auto")
# CPU flags of native bfloat16 arithmetic (AVX512-BF16: AMD Zen 4+, Intel Cooper Lake+;
# AMX: Intel Sapphire Rapids+); without them oneDNN emulates bf16, slower than fp32
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_bf16(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether ``device`` computes bfloat16 natively (so bf16 training runs faster)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))
    return False


def training_dtype(
    precision: str, device: torch.device, key: str, flags: frozenset[str] | None = None
) -> torch.dtype:
    """The dtype a training step computes in for the config value ``precision`` (at ``key``):
    ``fp32`` float32; ``bf16`` bfloat16 (an error where ``device`` lacks it natively);
    ``auto`` bfloat16 where native, else float32."""
    if precision not in PRECISIONS:
        raise UserError(
            f"config key {key}: must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "fp32":
        return torch.float32
    if native_bf16(device, flags):
        return torch.bfloat16
    if precision == "auto":
        return torch.float32
    raise UserError(
        f"config key {key} is bf16 but device {device} has no native bfloat16 "
        f"(CPU flags {' or '.join(sorted(NATIVE_BF16_FLAGS))}, or a CUDA GPU with bf16); "
        "set it to auto or fp32"
    )


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision in ``dtype`` for the forward pass and loss on ``device`` (a no-op for
    float32): torch's autocast policy, which keeps the losses in float32."""
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        yield


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads to the cores Snakemake gave the job."""
    if threads is not None and threads > 0:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
