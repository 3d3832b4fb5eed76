"""Training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint holds tensors and plain Python values only (dicts, lists, numbers, strings),
so reading one never unpickles an object; the random generator states are stored that way
too (``rng_states``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss_core.io import save_torch


class UnreadableCheckpoint(ValueError):
    """A checkpoint file exists but cannot be read (truncated, or pickled objects)."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` (state dicts, numbers, lists, strings...) atomically."""
    save_torch(path, state)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict | None:
    """Return the checkpoint at ``path``, or None when there is none.

    A file that cannot be read with ``weights_only=True`` raises ``UnreadableCheckpoint``
    naming it.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds here
        raise UnreadableCheckpoint(
            f"{path} is unreadable ({' '.join(str(err).split())[:200]}); delete it and rerun"
        ) from err


def rng_states() -> dict[str, Any]:
    """Every global random generator's state as tensors and plain values."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": version,
            "state": torch.tensor(python_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set every global random generator back to ``rng_states()``'s record."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = states["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss_next"])
    )
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
