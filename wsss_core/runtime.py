"""Run-time choices shared by every stage: device, seeding, threads."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from wsss_core.cli import UserError


def select_device(preference: str = "auto") -> torch.device:
    """Return the device to compute on: CUDA when present (``auto``), else CPU.

    ``preference`` is ``auto``, ``cpu`` or ``cuda`` (optionally ``cuda:N``).
    Asking for CUDA on a machine without it is an error that says so.
    """
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
