"""Train the DeepLabV3+ segmenter on pseudo masks (label 255 ignored).

One config mapping (the ``segmenter.net`` section) holds the architecture keys of
``SegmenterConfig`` and the training keys of ``TrainConfig``; any other key is an
error that names it. The learning rate decays per step with the poly schedule
(DeepLab's (1 - step/total)^0.9); the backbone runs at ``backbone_lr_mult`` times
the head's rate. A checkpoint is written after every epoch; every epoch reseeds
all generators from (seed, epoch), so a run resumed after a kill ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from wsss_core.checkpoint import load_checkpoint, save_checkpoint
from wsss_core.data.voc import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOCSegmentation,
    image_path,
    mask_path,
    read_class_names,
    train_transform,
)
from wsss_core.runtime import seed_everything
from wsss_core.schedules import poly
from wsss_core.segmenter import (
    DeepLabV3Plus,
    SegmenterConfig,
    build_segmenter,
    save_segmenter,
    segmentation_loss,
)
from wsss_core.tables import write_table

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoints/last.pt"
MODEL_NAME = "segmenter.pt"
HISTORY_NAME = "history.csv"


@dataclass
class TrainConfig:
    """Training keys of the ``segmenter.net`` section (defaults: the CPU demo at 96 px)."""

    epochs: int = 12
    batch_size: int = 16
    crop_size: int = 96
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    jitter: float = 0.3
    optimizer: str = "sgd"
    lr: float = 0.01
    backbone_lr_mult: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    num_workers: int = 0
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "crop_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"config key segmenter.net.{key} must be a positive integer")
        if self.batch_size < 2:
            raise ValueError("config key segmenter.net.batch_size must be >= 2 (batch norm)")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(
                "config key segmenter.net.optimizer must be 'sgd' or 'adamw', "
                f"got {self.optimizer!r}"
            )
        for key in ("lr", "backbone_lr_mult"):
            if not getattr(self, key) > 0:
                raise ValueError(f"config key segmenter.net.{key} must be > 0")
        if self.num_workers < 0:
            raise ValueError("config key segmenter.net.num_workers must be >= 0")


def parse_config(cfg: dict[str, Any], num_classes: int) -> tuple[SegmenterConfig, TrainConfig]:
    """Split the ``segmenter.net`` mapping into architecture and training configs.

    ``num_classes`` (background + K) comes from the dataset, not from the config.
    """
    arch_keys = {f.name for f in fields(SegmenterConfig)} - {"num_classes"}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(cfg) - arch_keys - train_keys)
    if unknown:
        raise ValueError(
            f"unknown config key(s) segmenter.net.{', segmenter.net.'.join(unknown)}; known keys: "
            f"{', '.join(sorted(arch_keys | train_keys))}"
        )
    net = SegmenterConfig.from_dict(
        {**{k: v for k, v in cfg.items() if k in arch_keys}, "num_classes": num_classes}
    )
    train = TrainConfig(**{k: v for k, v in cfg.items() if k in train_keys})
    train.validate()
    return net, train


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: every epoch's randomness depends on (seed, epoch) only."""
    return (seed * 1_000_003 + epoch) % (2**63)


def make_optimizer(model: DeepLabV3Plus, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW with two groups: backbone at lr * backbone_lr_mult, head at lr."""
    groups = [
        {"params": list(model.backbone.parameters()), "lr": cfg.lr * cfg.backbone_lr_mult},
        {"params": model.head_parameters(), "lr": cfg.lr},
    ]
    for group in groups:
        group["initial_lr"] = group["lr"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def set_poly_lr(optimizer: torch.optim.Optimizer, step: int, total: int, power: float) -> float:
    """Set every group's rate to initial_lr * poly(step); return the head's (last group's) rate."""
    factor = poly(step, total, power)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[-1]["lr"]


def check_masks_present(dataset: VOCSegmentation) -> None:
    """Every id of the split must have a pseudo mask; say which are missing."""
    missing = [i for i in dataset.ids if not mask_path(dataset.root, i, dataset.mask_dir).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(dataset.ids)} training images have no mask in "
            f"{dataset.mask_dir} (first: {missing[0]}.png); re-run the rule that writes them"
        )


def data_digest(dataset: VOCSegmentation) -> str:
    """SHA-1 over the ids, the bytes of their masks and the sizes of their images.

    A checkpoint is resumed only when this matches: new pseudo masks (an upstream rule
    rerun) or another dataset restart training instead of reusing stale weights.
    """
    digest = hashlib.sha1()
    for image_id in dataset.ids:
        digest.update(image_id.encode())
        digest.update(mask_path(dataset.root, image_id, dataset.mask_dir).read_bytes())
        digest.update(str(image_path(dataset.root, image_id).stat().st_size).encode())
    return digest.hexdigest()


def train_one_epoch(
    model: DeepLabV3Plus,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    first_step: int,
    total_steps: int,
    poly_power: float,
    device: torch.device,
) -> tuple[float, float]:
    """One pass of SGD steps with the poly rate per step: (mean batch loss, last head rate)."""
    model.train()
    loss_sum, lr, steps = 0.0, float("nan"), 0
    for step, (images, masks) in enumerate(batches, start=first_step):
        lr = set_poly_lr(optimizer, step, total_steps, poly_power)
        logits = model(images.to(device, non_blocking=True))
        loss = segmentation_loss(logits, masks.to(device, non_blocking=True))
        if not math.isfinite(loss.item()):
            raise FloatingPointError(
                f"training loss became {loss.item()} at step {step}; lower segmenter.net.lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item()
        steps += 1
    return loss_sum / max(steps, 1), lr


@dataclass
class TrainResult:
    model: DeepLabV3Plus
    history: pd.DataFrame
    model_path: Path


def train_segmenter(
    data_root: str | os.PathLike,
    split: str,
    mask_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: dict[str, Any],
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train on ``<mask_dir>/<id>.png`` for the ids of ``split``; write into ``out_dir``.

    Writes ``checkpoints/last.pt`` and ``history.csv`` (epoch, train_loss, lr) after each
    epoch and ``segmenter.pt`` at the end. A checkpoint from a different config, seed,
    split or masks (``data_digest``) is not resumed from (training restarts, with a warning).
    """
    device = torch.device(device)
    out_dir = Path(out_dir)
    class_names = read_class_names(data_root)
    net_cfg, cfg = parse_config(config, num_classes=len(class_names) + 1)
    dataset = VOCSegmentation(
        data_root,
        split,
        mask_dir=mask_dir,
        transform=train_transform(
            cfg.crop_size, tuple(cfg.scale_range), cfg.mean, cfg.std, cfg.jitter
        ),
    )
    check_masks_present(dataset)
    if len(dataset) < cfg.batch_size:
        raise ValueError(
            f"split '{split}' has {len(dataset)} images, fewer than segmenter.net.batch_size "
            f"({cfg.batch_size}); lower the batch size"
        )
    steps_per_epoch = len(dataset) // cfg.batch_size  # drop_last: batch norm needs > 1 sample
    total_steps = cfg.epochs * steps_per_epoch

    seed_everything(seed)
    model = build_segmenter(net_cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    fingerprint = {
        "net": net_cfg.to_dict(),
        "train": asdict(cfg),
        "seed": seed,
        "split": split,
        "data": data_digest(dataset),
    }
    start_epoch, history = _resume(out_dir / CHECKPOINT_NAME, fingerprint, model, optimizer)

    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        seed_everything(epoch_seed(seed, epoch))
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)),
            pin_memory=device.type == "cuda",
        )
        batches = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show_progress)
        loss, lr = train_one_epoch(
            model, batches, optimizer, epoch * steps_per_epoch, total_steps, cfg.poly_power, device
        )
        row = {"epoch": epoch + 1, "train_loss": loss, "lr": lr}
        history.append(row)
        save_checkpoint(
            out_dir / CHECKPOINT_NAME,
            {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": history,
                "fingerprint": fingerprint,
            },
        )
        write_table(pd.DataFrame(history), out_dir / HISTORY_NAME)
        log.info(
            "epoch %d/%d: train_loss %.4f, lr %.3g (%.1f s)",
            epoch + 1,
            cfg.epochs,
            row["train_loss"],
            lr,
            time.perf_counter() - started,
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)

    history_df = pd.DataFrame(history, columns=["epoch", "train_loss", "lr"])
    write_table(history_df, out_dir / HISTORY_NAME)
    model_path = out_dir / MODEL_NAME
    info = {"class_names": class_names, "mean": list(cfg.mean), "std": list(cfg.std)}
    save_segmenter(model_path, model, {**info, "epochs": cfg.epochs, "train_config": asdict(cfg)})
    model.eval()
    return TrainResult(model=model, history=history_df, model_path=model_path)


def _resume(
    path: Path,
    fingerprint: dict[str, Any],
    model: DeepLabV3Plus,
    optimizer: torch.optim.Optimizer,
) -> tuple[int, list[dict[str, float]]]:
    """Load the last checkpoint when it belongs to this run: (epochs done, history)."""
    state = load_checkpoint(path)
    if state is None:
        return 0, []
    if state.get("fingerprint") != fingerprint:
        log.warning(
            "%s was written with another config, seed or dataset; training from scratch", path
        )
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return int(state["epoch"]), list(state["history"])
