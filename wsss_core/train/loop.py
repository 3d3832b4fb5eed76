"""The one epoch loop of the classifier, the AffinityNet and the segmenter, with one
resume policy.

After every epoch ``<out_dir>/checkpoints/last.pt`` holds the model, the optimiser, the
epoch, the history, every random generator state and the run's ``Fingerprint`` (its
settings, seed and a digest of its input files), and ``history.csv`` is rewritten. A rerun
resumes from the checkpoint only when the fingerprint matches, and then ends with the same
weights as an uninterrupted run. Any other checkpoint (other settings, seed or inputs, or
one that cannot be read) is moved to ``checkpoints/superseded.pt`` and training starts
from scratch, said in one log line: never an error, never a silent reuse.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wsss_core.io import write_table
from wsss_core.runtime import seed_everything
from wsss_core.train.checkpoint import (
    UnreadableCheckpoint,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from wsss_core.train.digest import InputFiles, digest_files, plain

logger = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"
SUPERSEDED = Path("checkpoints") / "superseded.pt"
HISTORY = "history.csv"
LOADER_SEED_STRIDE = 100_003  # epoch e of seed s shuffles with s * stride + e
STATE_KEYS = ("model", "optimizer", "epoch", "history", "rng", "fingerprint")


@dataclass(frozen=True)
class Fingerprint:
    """What a checkpoint must match to be resumed: settings (JSON), seed, input digest."""

    settings: dict[str, Any]
    seed: int
    inputs: str

    @classmethod
    def of(cls, settings: Mapping[str, Any], seed: int, inputs: InputFiles) -> Fingerprint:
        """The fingerprint of a run on the files ``inputs`` (role -> paths)."""
        return cls(plain(dict(settings)), int(seed), digest_files(inputs))

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "seed": self.seed, "inputs": self.inputs}

    def mismatch(self, stored: Any) -> str | None:
        """Why a checkpoint's stored fingerprint is not this one; None when it is."""
        if not isinstance(stored, dict) or set(stored) != {"settings", "seed", "inputs"}:
            return "written in an older format"
        reasons = []
        if stored["settings"] != self.settings:
            reasons.append(f"other settings ({_changes(stored['settings'], self.settings)})")
        if stored["seed"] != self.seed:
            reasons.append(f"seed {stored['seed']} instead of {self.seed}")
        if stored["inputs"] != self.inputs:
            reasons.append("other input files (content digest changed)")
        return f"written by a run with {', '.join(reasons)}" if reasons else None


def _changes(old: Any, new: Any, limit: int = 3) -> str:
    """The first ``limit`` settings that differ, as ``key: old -> new``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return f"{_short(old)} -> {_short(new)}"
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k, ...) != new.get(k, ...)]
    shown = [f"{k}: {_short(old.get(k, 'unset'))} -> {_short(new.get(k, 'unset'))}" for k in keys]
    return "; ".join(shown[:limit]) + (f"; {len(keys) - limit} more" if len(keys) > limit else "")


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> DataLoader:
    """A loader whose order and worker seeds come from (seed, epoch) alone, so a resumed
    run draws the same batches (and loading never draws from the global generators)."""
    generator = torch.Generator().manual_seed(seed * LOADER_SEED_STRIDE + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        pin_memory=torch.device(device).type == "cuda",
    )


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    fingerprint: Fingerprint,
    epochs: int,
    run_epoch: Callable[[int], Mapping[str, float]],
    out_dir: str | os.PathLike,
    history_columns: Sequence[str],
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log: logging.Logger | Any = logger,
) -> list[dict[str, float]]:
    """Run epochs ``start..epochs-1`` of ``run_epoch(epoch)`` (0-based; returns the epoch's
    numbers) after resuming what a checkpoint of this ``fingerprint`` holds; return the
    history (one row per epoch, ``epoch`` 1-based first).

    After each epoch the checkpoint and ``history.csv`` are written, then
    ``on_epoch_end(epoch, row)`` runs (raising there stops the run the way a kill does).
    """
    out_dir = Path(out_dir)
    start, history = resume(out_dir, fingerprint, model, optimizer, log)
    for epoch in range(start, epochs):
        started = time.perf_counter()
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in run_epoch(epoch).items()}}
        history.append(row)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch + 1, "history": history, "rng": rng_states(),
                 "fingerprint": fingerprint.to_dict()}  # fmt: skip
        save_checkpoint(out_dir / CHECKPOINT, state)
        write_history(out_dir, history, history_columns)
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
        log.info("epoch %d/%d: %s (%.1f s)", epoch + 1, epochs, numbers,
                 time.perf_counter() - started)  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    write_history(out_dir, history, history_columns)
    return history


def resume(
    out_dir: Path,
    fingerprint: Fingerprint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    log: logging.Logger | Any = logger,
) -> tuple[int, list[dict[str, float]]]:
    """(epochs done, history) of the checkpoint in ``out_dir`` when it belongs to this run,
    with the model, optimiser and random generators restored from it; else (0, []) with
    the generators seeded from the fingerprint's seed and any other checkpoint set aside."""
    seed_everything(fingerprint.seed)
    path = out_dir / CHECKPOINT
    try:
        state = load_checkpoint(path)
    except UnreadableCheckpoint as err:
        set_aside(out_dir, f"unreadable ({' '.join(str(err.__cause__).split())[:120]})", log)
        return 0, []
    if state is None:
        return 0, []
    reason = fingerprint.mismatch(state.get("fingerprint")) or _misfit(state, model)
    if reason is not None:
        set_aside(out_dir, reason, log)
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    restore_rng_states(state["rng"])
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return int(state["epoch"]), [dict(row) for row in state["history"]]


def _misfit(state: Mapping[str, Any], model: nn.Module) -> str | None:
    """Why ``state`` cannot be loaded into ``model`` (None when it can)."""
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    own, stored = model.state_dict(), state["model"]
    if own.keys() != stored.keys() or any(own[k].shape != stored[k].shape for k in own):
        return "its weights do not fit this model"
    return None


def set_aside(out_dir: Path, reason: str, log: logging.Logger | Any = logger) -> None:
    """Move the checkpoint to ``checkpoints/superseded.pt`` (replacing an older one), logging
    why in one line."""
    os.replace(out_dir / CHECKPOINT, out_dir / SUPERSEDED)
    log.warning("set aside %s as %s (%s); training from scratch",
                out_dir / CHECKPOINT, SUPERSEDED.name, reason)  # fmt: skip


def write_history(out_dir: Path, history: list[dict], columns: Sequence[str]) -> None:
    write_table(pd.DataFrame(history, columns=list(columns)), out_dir / HISTORY)
