"""Train the segmenter on pseudo masks (label 255 ignored).

One config mapping (the ``segmenter.net`` section) holds the architecture keys of
``SegmenterConfig`` and the training keys of ``TrainConfig``; any other key is an
error that names it. The learning rate decays per step with the poly schedule
(DeepLab's (1 - step/total)^0.9); the backbone runs at ``backbone_lr_mult`` times
the head's rate (0: frozen). With ``backbone: classifier`` the decoder sits on the run's
fine-tuned classifier and the images are normalised with the classifier's mean and std.
Given a validation split, every epoch ends with ``validate`` on a fixed sample of
``val_images`` of its images (single scale, no flip, no CRF: cheaper than
predict_segmenter): the cross-entropy against the ground truth and the mIoU and pixel
accuracy (fractions), columns ``val_loss``, ``val_mIoU``, ``val_pixel_accuracy`` of the
history; it draws no random number and changes no weight. A checkpoint is written after
every epoch (``wsss_core.train.loop``): a rerun with the same config, seed, pseudo masks,
images and backbone file ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from wsss_core.classifier.model import load_classifier
from wsss_core.config import schema_field
from wsss_core.data.datasets import VOCSegmentation
from wsss_core.data.layout import (
    load_gt_mask,
    load_image,
    mask_path,
    read_class_names,
    validation_ids,
)
from wsss_core.data.transforms import train_transform
from wsss_core.evaluate.metrics import ConfusionMatrix
from wsss_core.runtime import seed_everything
from wsss_core.segmenter.model import (
    CLASSIFIER,
    Segmenter,
    SegmenterConfig,
    build_segmenter,
    save_segmenter,
    segmentation_loss,
)
from wsss_core.segmenter.predict import normalised
from wsss_core.train.digest import InputFiles, dataset_files
from wsss_core.train.loop import Fingerprint, epoch_loader, train_epochs
from wsss_core.train.schedules import poly

log = logging.getLogger(__name__)

MODEL_NAME = "segmenter.pt"
HISTORY_COLUMNS = ["epoch", "train_loss", "lr"]
VAL_COLUMNS = ["val_loss", "val_mIoU", "val_pixel_accuracy"]


@dataclass
class TrainConfig:
    """Training keys of the ``segmenter.net`` section (defaults: the config schema's)."""

    epochs: int = schema_field("segmenter.net.epochs")
    batch_size: int = schema_field("segmenter.net.batch_size")
    crop_size: int = schema_field("segmenter.net.crop_size")
    scale_range: list[float] = schema_field("segmenter.net.scale_range")
    jitter: float = schema_field("segmenter.net.jitter")
    optimizer: str = schema_field("segmenter.net.optimizer")
    lr: float = schema_field("segmenter.net.lr")
    backbone_lr_mult: float = schema_field("segmenter.net.backbone_lr_mult")
    momentum: float = schema_field("segmenter.net.momentum")
    weight_decay: float = schema_field("segmenter.net.weight_decay")
    poly_power: float = schema_field("segmenter.net.poly_power")
    num_workers: int = schema_field("segmenter.net.num_workers")
    val_images: int = schema_field("segmenter.net.val_images")
    mean: list[float] = schema_field("segmenter.net.mean")
    std: list[float] = schema_field("segmenter.net.std")

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
        if not self.lr > 0:
            raise ValueError("config key segmenter.net.lr must be > 0")
        if not self.backbone_lr_mult >= 0:
            raise ValueError("config key segmenter.net.backbone_lr_mult must be >= 0 (0: frozen)")
        for key in ("num_workers", "val_images"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"config key segmenter.net.{key} must be an integer >= 0")


def parse_config(cfg: dict[str, Any], num_classes: int) -> tuple[SegmenterConfig, TrainConfig]:
    """Split the ``segmenter.net`` mapping into architecture and training configs.

    ``num_classes`` (background + K) comes from the dataset, not from the config.
    """
    arch_keys = {f.name for f in fields(SegmenterConfig)} - {"num_classes", "classifier_config"}
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


def make_optimizer(model: Segmenter, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW with two groups: backbone at lr * backbone_lr_mult (none when
    it is frozen), head at lr (the last group)."""
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult}] if backbone else []
    groups.append({"params": model.head_parameters(), "lr": cfg.lr})
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


def input_files(
    dataset: VOCSegmentation, net_cfg: SegmenterConfig, classifier: str | os.PathLike | None
) -> InputFiles:
    """What the segmenter learns from: the pseudo masks and images of ``dataset`` and the
    backbone's weights: the classifier file (classifier backbone) or the file that
    ``pretrained`` names."""
    files = dataset_files(dataset.root, dataset.ids, masks=True, mask_dir=dataset.mask_dir)
    weights = net_cfg.pretrained
    if net_cfg.backbone == CLASSIFIER:
        backbone = [classifier]
    else:
        backbone = [weights] if isinstance(weights, str) and weights != "hub" else []
    return {**files, "backbone": backbone}


def classifier_backbone(
    path: str | os.PathLike | None, net_cfg: SegmenterConfig, cfg: TrainConfig
) -> tuple[torch.nn.Module, SegmenterConfig, TrainConfig]:
    """The fine-tuned classifier of ``path``, and the configs completed with its model_config
    and its input mean and std (which replace segmenter.net.mean and std)."""
    if path is None:
        raise ValueError(
            "segmenter.net.backbone classifier needs the run's classifier file (--classifier)"
        )
    vit, info = load_classifier(path)
    net_cfg = dataclasses.replace(net_cfg, classifier_config=dict(info["model_config"]))
    cfg = dataclasses.replace(cfg, mean=list(info["mean"]), std=list(info["std"]))
    return vit, net_cfg, cfg


def train_one_epoch(
    model: Segmenter,
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


@torch.no_grad()
def validate(
    model: Segmenter,
    data_root: str | os.PathLike,
    ids: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> dict[str, float]:
    """Score ``model`` on the ground truth of ``ids``, one image at a time at its own size
    (single scale, no flip): mean cross-entropy per image (255 ignored), and the mIoU and
    pixel accuracy of the argmax over all images (fractions)."""
    model.eval()
    num_classes = model.cfg.num_classes
    matrix = ConfusionMatrix(num_classes)
    loss_sum = 0.0
    for image_id in ids:
        image = load_image(data_root, image_id)
        truth = load_gt_mask(data_root, image_id, num_classes=num_classes)
        logits = model(normalised([image], mean, std, device))
        target = torch.from_numpy(truth.astype(np.int64))[None].to(device)
        loss_sum += float(segmentation_loss(logits, target))
        matrix.update(logits.argmax(dim=1)[0].cpu().numpy(), truth)
    scores = matrix.scores()
    return {"val_loss": loss_sum / max(len(ids), 1), "val_mIoU": scores.miou,
            "val_pixel_accuracy": scores.pixel_accuracy}  # fmt: skip


@dataclass
class TrainResult:
    model: Segmenter
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
    val_split: str | None = None,
    classifier: str | os.PathLike | None = None,
) -> TrainResult:
    """Train on ``<mask_dir>/<id>.png`` for the ids of ``split``; write into ``out_dir``.
    ``classifier`` is the run's classifier file (needed by ``backbone: classifier``).

    Writes ``checkpoints/last.pt`` and ``history.csv`` (epoch, train_loss, lr and, with
    ``val_split`` and ``val_images`` > 0, the ``validate`` columns on ``val_images`` images
    spread evenly over ``val_split``) after each epoch and ``segmenter.pt`` at the end. A
    checkpoint of another config, seed, split, masks, images, validation images or backbone
    file (``input_files``) is set aside and training restarts.
    """
    device = torch.device(device)
    out_dir = Path(out_dir)
    class_names = read_class_names(data_root)
    net_cfg, cfg = parse_config(config, num_classes=len(class_names) + 1)
    vit = None
    if net_cfg.backbone == CLASSIFIER:
        vit, net_cfg, cfg = classifier_backbone(classifier, net_cfg, cfg)
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

    seed_everything(seed)  # the initial weights are drawn from the seed
    model = build_segmenter(net_cfg, vit).to(device)
    if cfg.backbone_lr_mult == 0:
        model.freeze_backbone()
    optimizer = make_optimizer(model, cfg)
    val_ids = validation_ids(data_root, val_split, cfg.val_images)
    settings = {"net": net_cfg.to_dict(), "train": asdict(cfg), "split": split}
    inputs = input_files(dataset, net_cfg, classifier)
    if val_ids:
        val_files = dataset_files(data_root, val_ids, masks=True)
        inputs.update({f"val_{key}": paths for key, paths in val_files.items()})
    fingerprint = Fingerprint.of(settings, seed, inputs)

    def run_epoch(epoch: int) -> dict[str, float]:
        loader = epoch_loader(dataset, cfg.batch_size, seed, epoch, drop_last=True,
                              num_workers=cfg.num_workers, device=device)  # fmt: skip
        batches = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show_progress)
        first, total = epoch * steps_per_epoch, cfg.epochs * steps_per_epoch
        loss, lr = train_one_epoch(model, batches, optimizer, first, total, cfg.poly_power, device)
        row = {"train_loss": loss, "lr": lr}
        if val_ids:
            row.update(validate(model, data_root, val_ids, cfg.mean, cfg.std, device))
        return row

    columns = HISTORY_COLUMNS + (VAL_COLUMNS if val_ids else [])
    history = train_epochs(model, optimizer, fingerprint, cfg.epochs, run_epoch, out_dir,
                           columns, on_epoch_end, log)  # fmt: skip
    model_path = out_dir / MODEL_NAME
    info = {"class_names": class_names, "mean": list(cfg.mean), "std": list(cfg.std)}
    save_segmenter(model_path, model, {**info, "epochs": cfg.epochs, "train_config": asdict(cfg)})
    model.eval()
    history_df = pd.DataFrame(history, columns=columns)
    return TrainResult(model=model, history=history_df, model_path=model_path)
