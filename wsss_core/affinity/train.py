"""Train the AffinityNet on CRF seeds, resuming from its last checkpoint after a kill.

Each batch: random crops of images with their seed masks (0 background, c + 1 class c,
255 unsure; crops padded with 255), the seeds pooled to the feature grid by majority vote,
affinity labels of every pair closer than ``radius`` cells, and the balanced loss
L_bg_pos / 2 + L_fg_pos / 2 + L_neg on a_ij = exp(-mean|f_i - f_j|)
(``wsss_core.affinity.pairs``). AdamW or SGD, poly learning-rate decay per step; the head learns
at ``lr`` and, unless frozen, the backbone at ``lr * backbone_lr_mult``.

After every epoch the net is validated when a validation set is given (a fixed sample of
``val_images`` images of the eval split with their ground-truth masks, ``validate``): the
same balanced loss on ground-truth pair labels (``val_loss``) and, per pair group, the
fraction of pairs on the right side of a = 0.5 (``val_bg_pos_acc``, ``val_fg_pos_acc``,
``val_neg_acc``); it draws no random number and changes no weight. Then ``history.csv``
(epoch, train_loss, lr, the three loss parts and the validation columns) and the checkpoint
are written (``wsss_core.train.loop``): a rerun with the same config, seed, classifier, seeds
and images continues where a killed run stopped and ends with the same weights.
At the end ``affinity.pt`` holds the net (``wsss_core.affinity.net.load_affinity_net``).

Config keys (the ``affinity.net`` section): the architecture keys of
``AffinityNetConfig`` and the training keys of ``AffinityTrainConfig``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsss_core.affinity.net import (
    AffinityConfigError,
    AffinityNet,
    AffinityNetConfig,
    save_affinity_net,
)
from wsss_core.affinity.pairs import affinity_loss, downsample_labels, pair_affinities, pair_labels
from wsss_core.config import schema_field
from wsss_core.data.datasets import VOCSegmentation
from wsss_core.train.digest import InputFiles, dataset_files
from wsss_core.train.loop import Fingerprint, epoch_loader, train_epochs
from wsss_core.train.schedules import poly
from wsss_core.train.settings import is_number

HISTORY_COLUMNS = ["epoch", "train_loss", "lr", "train_bg_pos_loss", "train_fg_pos_loss",
                   "train_neg_loss"]  # fmt: skip
VAL_COLUMNS = ["val_loss", "val_bg_pos_acc", "val_fg_pos_acc", "val_neg_acc"]
MODEL_FILE = "affinity.pt"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AffinityTrainConfig:
    """Training hyper-parameters (keys of the ``affinity.net`` section besides the net's;
    defaults: the config schema's)."""

    radius: int = schema_field("affinity.net.radius")
    epochs: int = schema_field("affinity.net.epochs")
    batch_size: int = schema_field("affinity.net.batch_size")
    optimizer: str = schema_field("affinity.net.optimizer")
    lr: float = schema_field("affinity.net.lr")
    backbone_lr_mult: float = schema_field("affinity.net.backbone_lr_mult")
    weight_decay: float = schema_field("affinity.net.weight_decay")
    momentum: float = schema_field("affinity.net.momentum")
    poly_power: float = schema_field("affinity.net.poly_power")
    crop_size: int | None = schema_field("affinity.net.crop_size")
    scale_range: tuple[float, float] = schema_field("affinity.net.scale_range", tuple)
    jitter: float = schema_field("affinity.net.jitter")
    num_workers: int = schema_field("affinity.net.num_workers")
    val_images: int = schema_field("affinity.net.val_images")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> AffinityTrainConfig:
        values = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg}
        if values.get("scale_range") is not None:
            scale = values["scale_range"]
            if not isinstance(scale, list | tuple) or len(scale) != 2:
                raise AffinityConfigError(
                    f"affinity.net.scale_range must be [low, high], got {scale!r}"
                )
            values["scale_range"] = (float(scale[0]), float(scale[1]))
        tc = cls(**values)
        tc.check()
        return tc

    def check(self) -> None:
        def bad(key: str, what: str) -> AffinityConfigError:
            return AffinityConfigError(
                f"affinity.net.{key} must be {what}, got {getattr(self, key)!r}"
            )

        for key in ("radius", "epochs", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(key, "a positive integer")
        if self.radius < 2:
            raise bad("radius", "at least 2 (radius 1 has no pairs)")
        if self.optimizer not in ("adamw", "sgd"):
            raise bad("optimizer", "'adamw' or 'sgd'")
        if not is_number(self.lr) or self.lr <= 0:
            raise bad("lr", "a positive number")
        for key in ("backbone_lr_mult", "weight_decay", "momentum", "poly_power", "jitter"):
            if not is_number(getattr(self, key)) or getattr(self, key) < 0:
                raise bad(key, "a non-negative number")
        if self.crop_size is not None and (
            isinstance(self.crop_size, bool) or not isinstance(self.crop_size, int)
            or self.crop_size < 1
        ):  # fmt: skip
            raise bad("crop_size", "null (the classifier's input size) or a positive integer")
        for key in ("num_workers", "val_images"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(key, "a non-negative integer")


def split_config(cfg: Mapping[str, Any]) -> tuple[AffinityNetConfig, AffinityTrainConfig]:
    """The net and training parts of the flat ``affinity.net`` config; unknown keys raise.

    The backbone is frozen exactly when ``backbone_lr_mult`` is 0.
    """
    net_keys = {f.name for f in dataclasses.fields(AffinityNetConfig)} - {"freeze_backbone"}
    known = net_keys | {f.name for f in dataclasses.fields(AffinityTrainConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise AffinityConfigError(
            f"unknown affinity.net key(s) {unknown}; known keys are {sorted(known)}"
        )
    tc = AffinityTrainConfig.from_dict(cfg)
    net_cfg = AffinityNetConfig.from_dict(
        {**{k: v for k, v in cfg.items() if k in net_keys},
         "freeze_backbone": tc.backbone_lr_mult == 0}
    )  # fmt: skip
    return net_cfg, tc


# --------------------------------------------------------------------------------------
# Optimiser, loss, epochs


def build_optimizer(net: AffinityNet, tc: AffinityTrainConfig) -> torch.optim.Optimizer:
    """Head at lr, trainable backbone at lr * backbone_lr_mult; no decay on biases/norms."""
    groups = []
    parts = ((net.head_parameters(), 1.0), (net.backbone_parameters(), tc.backbone_lr_mult))
    for params, mult in parts:
        if not params or mult == 0:
            continue
        decayed = [p for p in params if p.ndim > 1]
        plain = [p for p in params if p.ndim <= 1]
        for group, decay in ((decayed, tc.weight_decay), (plain, 0.0)):
            if group:
                groups.append({"params": group, "weight_decay": decay, "lr_mult": mult})
    if tc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum)
    return torch.optim.AdamW(groups, lr=tc.lr)


def batch_loss(net: AffinityNet, images: torch.Tensor, seeds: torch.Tensor, radius: int):
    """The affinity loss of one batch of images [B, 3, S, S] and seed masks [B, S, S]."""
    features = net(images)
    grid = downsample_labels(seeds, tuple(features.shape[-2:]))
    return affinity_loss(pair_affinities(features, radius), pair_labels(grid, radius))


def _loader(ds: Dataset, tc: AffinityTrainConfig, seed: int, epoch: int, device) -> DataLoader:
    """The shuffled loader of one epoch."""
    return epoch_loader(ds, tc.batch_size, seed, epoch, drop_last=len(ds) > tc.batch_size,
                        num_workers=tc.num_workers, device=device)  # fmt: skip


def train_one_epoch(
    net: AffinityNet,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    tc: AffinityTrainConfig,
    device: torch.device,
    first_step: int,
    total_steps: int,
    desc: str,
) -> dict[str, float]:
    """One pass; returns the mean loss and parts per batch and the last learning rate."""
    net.train()
    sums = {"train_loss": 0.0, "train_bg_pos_loss": 0.0, "train_fg_pos_loss": 0.0,
            "train_neg_loss": 0.0}  # fmt: skip
    batches, lr, step = 0, tc.lr, first_step
    bar = tqdm(loader, desc=desc, file=sys.stderr, mininterval=10.0, leave=False)
    for images, seeds in bar:
        lr = tc.lr * poly(step, total_steps, tc.poly_power)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        loss = batch_loss(net, images.to(device), seeds.to(device), tc.radius)
        if not torch.isfinite(loss.total):
            raise FloatingPointError(
                f"affinity loss became {loss.total.item()} at step {step}; lower affinity.net.lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        for key, value in (
            ("train_loss", loss.total),
            ("train_bg_pos_loss", loss.bg_pos),
            ("train_fg_pos_loss", loss.fg_pos),
            ("train_neg_loss", loss.neg),
        ):
            sums[key] += float(value.detach())  # fmt: skip
        batches += 1
        step += 1
        bar.set_postfix(loss=f"{sums['train_loss'] / batches:.4f}", refresh=False)
    row = {key: value / max(batches, 1) for key, value in sums.items()}
    row["lr"] = lr
    return row


@torch.no_grad()
def validate(net: AffinityNet, val_ds: Dataset, radius: int, device: torch.device) -> dict:
    """Affinities of the validation images (items (image [3, S, S], ground-truth mask)) against
    their ground-truth pair labels, pooled over all pairs: the balanced loss ``val_loss``
    (as ``affinity_loss``, an empty group adding 0) and the fraction of each group's pairs on
    the right side of a = 0.5 (positives above, negatives below; NaN for an empty group)."""
    was_training = net.training
    net.eval()
    eps = 1e-5
    sums = {group: [0.0, 0, 0] for group in ("bg_pos", "fg_pos", "neg")}  # nll, right, pairs
    for index in range(len(val_ds)):
        image, mask = val_ds[index]
        features = net(image.unsqueeze(0).to(device))
        grid = downsample_labels(mask.unsqueeze(0).to(device), tuple(features.shape[-2:]))
        labels = pair_labels(grid, radius)
        aff = pair_affinities(features, radius)
        for group, chosen in (("bg_pos", labels.bg_pos), ("fg_pos", labels.fg_pos),
                              ("neg", labels.neg)):  # fmt: skip
            a = aff[chosen].double()
            positive = group != "neg"
            nll = -torch.log(a + eps) if positive else -torch.log(1.0 + eps - a)
            right = a > 0.5 if positive else a < 0.5
            sums[group][0] += float(nll.sum())
            sums[group][1] += int(right.sum())
            sums[group][2] += int(a.numel())
    net.train(was_training)
    mean = {g: nll / pairs if pairs else 0.0 for g, (nll, _, pairs) in sums.items()}
    row = {"val_loss": mean["bg_pos"] / 2 + mean["fg_pos"] / 2 + mean["neg"]}
    for group, (_, right, pairs) in sums.items():
        row[f"val_{group}_acc"] = right / pairs if pairs else float("nan")
    return row


def input_files(
    dataset: VOCSegmentation,
    classifier: str | os.PathLike | None,
    val_dataset: VOCSegmentation | None = None,
) -> InputFiles:
    """What the AffinityNet learns from: the images and seed masks of ``dataset`` and, when
    its backbone is the classifier, the classifier file it starts from; and the validation
    images and masks, whose scores the history holds."""
    files = dataset_files(dataset.root, dataset.ids, masks=True, mask_dir=dataset.mask_dir)
    files = {**files, "classifier": [classifier] if classifier is not None else []}
    if val_dataset is not None:
        val = dataset_files(val_dataset.root, val_dataset.ids, masks=True)
        files.update({f"val_{key}": paths for key, paths in val.items()})
    return files


def train(
    net: AffinityNet,
    net_info: Mapping[str, Any],
    train_ds: Dataset,
    cfg: Mapping[str, Any],
    out_dir: str | Path,
    device: torch.device | str,
    seed: int = 0,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    inputs: InputFiles | None = None,
    val_ds: Dataset | None = None,
) -> list[dict]:
    """Train ``net`` on ``train_ds`` (items (image [3, S, S], seed mask [S, S])); resume from
    ``out_dir/checkpoints/last.pt`` when it was written with the same ``cfg``, ``seed`` and
    ``inputs`` (``input_files``; None for data held in memory). With ``val_ds`` (items (image,
    ground-truth mask)) every epoch ends with ``validate`` (its columns join the history).
    Writes ``history.csv`` and the checkpoint every epoch and ``affinity.pt`` at the end.
    ``on_epoch_end(epoch, row)`` runs after each epoch's checkpoint (raising there stops the
    run the way a kill does). Returns the history.
    """
    _, tc = split_config(cfg)
    device = torch.device(device)
    out_dir = Path(out_dir)
    if len(train_ds) == 0:
        raise ValueError("the affinity training set is empty; check the split and seed folder")
    net.to(device)
    optimizer = build_optimizer(net, tc)
    fingerprint = Fingerprint.of(cfg, seed, inputs or {})
    steps_per_epoch = len(_loader(train_ds, tc, seed, 0, device))

    def run_epoch(epoch: int) -> dict[str, float]:
        row = train_one_epoch(
            net, _loader(train_ds, tc, seed, epoch, device), optimizer, tc, device,
            first_step=epoch * steps_per_epoch, total_steps=tc.epochs * steps_per_epoch,
            desc=f"epoch {epoch + 1}/{tc.epochs}",
        )  # fmt: skip
        if val_ds is not None and len(val_ds) > 0:
            row.update(validate(net, val_ds, tc.radius, device))
        return row

    columns = HISTORY_COLUMNS + (VAL_COLUMNS if val_ds is not None and len(val_ds) > 0 else [])
    history = train_epochs(net, optimizer, fingerprint, tc.epochs, run_epoch, out_dir,
                           columns, on_epoch_end, log)  # fmt: skip
    extra = {"train_config": json.loads(json.dumps(dict(cfg), default=str)), "radius": tc.radius,
             "seed": seed}  # fmt: skip
    save_affinity_net(out_dir / MODEL_FILE, net, net_info, extra)
    log.info("wrote %s", out_dir / MODEL_FILE)
    return history


def effective_crop_size(tc: AffinityTrainConfig, net_info: Mapping[str, Any]) -> int:
    """The training crop: ``crop_size``, else the classifier's input size."""
    if tc.crop_size is not None:
        return tc.crop_size
    if net_info.get("input_size") is None:
        raise AffinityConfigError(
            "affinity.net.crop_size must be set for a CNN backbone (there is no classifier "
            "input size to default to)"
        )
    return int(net_info["input_size"])
