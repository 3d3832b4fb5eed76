"""Training checkpoints: written atomically each epoch, resumed after a kill."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from wsss_core.atomic import atomic_path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` (model/optimizer/scheduler state dicts, epoch, history...) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict | None:
    """Return the checkpoint at ``path``, or None when there is none to resume from.

    A checkpoint that exists but cannot be read is an error naming the file,
    never silently ignored (deleting it restarts training from scratch).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds here
        raise RuntimeError(
            f"checkpoint {path} is unreadable ({err}); delete it to restart training"
        ) from err
