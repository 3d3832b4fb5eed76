"""Fine-tune the multi-label classifier, resuming from its last checkpoint after a kill.

Loss: binary cross-entropy with logits averaged over classes and images (the same
value as PyTorch's multi-label soft-margin loss). Optimiser: AdamW or SGD with
momentum, the new head at ``head_lr_mult`` times the backbone rate, no weight decay
on biases, norms, position embedding and CLS token. The rate follows a linear
warm-up and a cosine decay per step. After every epoch the validation scores are
appended to ``history.csv`` and the checkpoint is written (``wsss_core.train.loop``): a
rerun with the same config, seed, label tables and images continues where the killed run
stopped and ends with the same weights as an uninterrupted run.

Config keys read here (the ``classifier`` section; defaults in the config schema):
``optimizer``, ``lr``, ``head_lr_mult``, ``weight_decay``, ``momentum``,
``batch_size``, ``epochs``, ``warmup_epochs``, ``min_lr_factor``, ``grad_clip``,
``num_workers``, ``stem_loss`` (a hybrid's stem also learns through an auxiliary head on its
pooled features, ``wsss_core.classifier.supervision``), ``precision`` (training steps in
float32 or bfloat16 autocast, ``wsss_core.runtime.training_dtype``; validation in float32).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsss_core.classifier.metrics import f1_at, per_class_average_precision
from wsss_core.classifier.model import ClassifierConfigError, save_classifier
from wsss_core.classifier.supervision import multilabel_loss, trainee, training_loss
from wsss_core.config import schema_field
from wsss_core.io import write_table, write_text
from wsss_core.runtime import PRECISIONS, autocast, training_dtype
from wsss_core.train.digest import InputFiles, dataset_files
from wsss_core.train.loop import Fingerprint, epoch_loader, train_epochs
from wsss_core.train.schedules import warmup_cosine
from wsss_core.train.settings import is_number

HISTORY_COLUMNS = ["epoch", "train_loss", "lr", "val_loss", "val_mAP", "val_F1"]
F1_THRESHOLD = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (the classifier config section minus the model keys); the
    defaults are the config schema's."""

    optimizer: str = schema_field("classifier.optimizer")
    lr: float = schema_field("classifier.lr")
    head_lr_mult: float = schema_field("classifier.head_lr_mult")
    weight_decay: float = schema_field("classifier.weight_decay")
    momentum: float = schema_field("classifier.momentum")
    batch_size: int = schema_field("classifier.batch_size")
    epochs: int = schema_field("classifier.epochs")
    warmup_epochs: float = schema_field("classifier.warmup_epochs")
    min_lr_factor: float = schema_field("classifier.min_lr_factor")
    grad_clip: float | None = schema_field("classifier.grad_clip")
    stem_loss: float = schema_field("classifier.stem_loss")
    precision: str = schema_field("classifier.precision")
    num_workers: int = schema_field("classifier.num_workers")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> TrainConfig:
        """Read the known keys of ``cfg`` (others belong to the model), checking each."""
        values = {f.name: cfg[f.name] for f in fields(cls) if cfg.get(f.name) is not None}
        tc = cls(**values)
        tc.check()
        return tc

    def check(self) -> None:
        def bad(key: str, what: str) -> ClassifierConfigError:
            return ClassifierConfigError(
                f"classifier.{key} must be {what}, got {getattr(self, key)!r}"
            )

        if self.optimizer not in ("adamw", "sgd"):
            raise bad("optimizer", "'adamw' or 'sgd'")
        if self.precision not in PRECISIONS:
            raise bad("precision", " or ".join(repr(p) for p in PRECISIONS))
        for key in ("batch_size", "epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(key, "a positive integer")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int):
            raise bad("num_workers", "a non-negative integer")
        if self.num_workers < 0:
            raise bad("num_workers", "a non-negative integer")
        for key in ("lr", "head_lr_mult"):
            if not is_number(getattr(self, key)) or getattr(self, key) <= 0:
                raise bad(key, "a positive number")
        for key in ("weight_decay", "momentum", "warmup_epochs", "min_lr_factor", "stem_loss"):
            if not is_number(getattr(self, key)) or getattr(self, key) < 0:
                raise bad(key, "a non-negative number")
        if self.min_lr_factor > 1:
            raise bad("min_lr_factor", "between 0 and 1")
        if self.grad_clip is not None and (not is_number(self.grad_clip) or self.grad_clip <= 0):
            raise bad("grad_clip", "null or a positive number")


# --------------------------------------------------------------------------------------
# Optimiser and schedule


def parameter_groups(model: nn.Module, weight_decay: float, head_lr_mult: float) -> list[dict]:
    """Backbone and head groups, each split into decayed weights and undecayed
    biases/norms/embeddings; every group carries its ``lr_mult``. Heads are the parameters
    named ``head.*`` (a wrapper such as ``StemSupervised`` names its own ``head_prefixes``)."""
    no_decay_names = set(getattr(model, "no_weight_decay", lambda: set())())
    head_prefixes = tuple(getattr(model, "head_prefixes", ("head.",)))
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.startswith(head_prefixes)
        decays = param.ndim > 1 and name not in no_decay_names
        groups.setdefault((is_head, decays), []).append(param)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decays else 0.0,
            "lr_mult": head_lr_mult if is_head else 1.0,
        }
        for (is_head, decays), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, tc.weight_decay, tc.head_lr_mult)
    if tc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum)
    return torch.optim.AdamW(groups, lr=tc.lr)


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Set every group to base_lr * lr_mult * factor; return the backbone rate."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group["lr_mult"] * factor
    return base_lr * factor


# --------------------------------------------------------------------------------------
# Epochs


def _loader(
    ds: Dataset, tc: TrainConfig, shuffle: bool, seed: int, epoch: int, device: torch.device
) -> DataLoader:
    """The training (shuffled) or validation loader of one epoch."""
    drop_last = shuffle and len(ds) > tc.batch_size
    return epoch_loader(ds, tc.batch_size, seed, epoch, shuffle=shuffle, drop_last=drop_last,
                        num_workers=tc.num_workers, device=device)  # fmt: skip


def _batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = batch[0], batch[1]
    images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True).float()


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    tc: TrainConfig,
    device: torch.device,
    first_step: int,
    total_steps: int,
    warmup_steps: int,
    desc: str,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """One pass over ``loader`` training ``model`` (the classifier, or its ``trainee``
    wrapper), forward and loss autocast to ``dtype``; returns (mean training loss per
    image, last backbone lr)."""
    model.train()
    loss_sum, seen, lr = 0.0, 0, tc.lr
    step = first_step
    bar = tqdm(loader, desc=desc, file=sys.stderr, mininterval=10.0, leave=False)
    for batch in bar:
        images, targets = _batch(batch, device)
        factor = warmup_cosine(step, total_steps, warmup_steps, tc.min_lr_factor)
        lr = set_learning_rate(optimizer, tc.lr, factor)
        with autocast(device, dtype):
            loss = training_loss(model, images, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} at step {step}; lower classifier.lr "
                "or set classifier.grad_clip"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        loss_sum += loss.item() * images.shape[0]
        seen += images.shape[0]
        step += 1
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
    return loss_sum / max(seen, 1), lr


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N, K] and targets [N, K] over ``loader`` (model in eval mode)."""
    model.eval()
    logits, targets = [], []
    for batch in loader:
        images, target = _batch(batch, device)
        logits.append(model(images).float().cpu())
        targets.append(target.cpu())
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


@dataclass
class Evaluation:
    """Validation scores of one model (fractions in [0, 1]; NaN where undefined)."""

    loss: float
    ap: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray

    @property
    def mean_ap(self) -> float:
        return float(np.nanmean(self.ap)) if np.isfinite(self.ap).any() else float("nan")

    @property
    def macro_f1(self) -> float:
        return float(np.nanmean(self.f1)) if np.isfinite(self.f1).any() else float("nan")


def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, seed: int = 0
) -> Evaluation:
    """Validation scores; any randomness of the data pipeline is drawn from a generator
    seeded with ``seed`` and forked off, so evaluating neither depends on nor disturbs the
    training generators (a resumed run scores the same)."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        logits, targets = predict(model, loader, device)
    loss = float(multilabel_loss(torch.from_numpy(logits), torch.from_numpy(targets)).item())
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    f1 = f1_at(probs, targets, F1_THRESHOLD)
    return Evaluation(
        loss, per_class_average_precision(probs, targets), f1.precision, f1.recall, f1.f1
    )


# --------------------------------------------------------------------------------------
# Outputs


def _json_number(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def metrics_dict(ev: Evaluation, class_names: list[str], epochs: int, num_val: int) -> dict:
    """metrics.json content: mAP, per-class AP, F1/precision/recall at 0.5 (fractions)."""

    def per_class(values: np.ndarray) -> dict[str, float | None]:
        return {name: _json_number(v) for name, v in zip(class_names, values, strict=True)}

    return {
        "mAP": _json_number(ev.mean_ap),
        "per_class_AP": per_class(ev.ap),
        "classes_without_positives": [
            name for name, ap in zip(class_names, ev.ap, strict=True) if not math.isfinite(ap)
        ],
        "threshold": F1_THRESHOLD,
        "macro_F1": _json_number(ev.macro_f1),
        "macro_precision": _json_number(float(np.nanmean(ev.precision)))
        if np.isfinite(ev.precision).any()
        else None,
        "macro_recall": _json_number(float(np.nanmean(ev.recall)))
        if np.isfinite(ev.recall).any()
        else None,
        "per_class_F1": per_class(ev.f1),
        "per_class_precision": per_class(ev.precision),
        "per_class_recall": per_class(ev.recall),
        "val_loss": _json_number(ev.loss),
        "epochs": epochs,
        "num_val_images": num_val,
    }


def metrics_table(ev: Evaluation, class_names: list[str]) -> pd.DataFrame:
    """One row per class (AP, F1, precision, recall in percent) and a 'mean' row."""
    df = pd.DataFrame(
        {
            "class": class_names,
            "AP": 100 * ev.ap,
            "F1": 100 * ev.f1,
            "precision": 100 * ev.precision,
            "recall": 100 * ev.recall,
        }
    )
    means = {"class": "mean"}
    for column in ("AP", "F1", "precision", "recall"):
        values = df[column].to_numpy(dtype=np.float64)
        means[column] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return pd.concat([df, pd.DataFrame([means])], ignore_index=True)


# --------------------------------------------------------------------------------------
# The training run


def input_files(
    data_root: str | os.PathLike, ids: Iterable[str], label_tables: Sequence[str | os.PathLike]
) -> dict[str, list[Path]]:
    """What the classifier learns from: the label tables and the images of both splits."""
    return {"label_tables": [Path(t) for t in label_tables],
            **dataset_files(data_root, sorted(set(ids)))}  # fmt: skip


def train(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    cfg: dict[str, Any],
    out_dir: str | Path,
    device: torch.device | str,
    log: logging.Logger | Any = logging,
    seed: int = 0,
    class_names: list[str] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    inputs: InputFiles | None = None,
) -> dict:
    """Train ``model`` on ``train_ds`` (items (image, 0/1 targets[K], ...)), validating on
    ``val_ds`` after each epoch; resume from ``out_dir/checkpoints/last.pt`` when it was
    written with the same ``cfg``, ``seed`` and ``inputs`` (the files the datasets read,
    ``input_files``; None for data held in memory).

    Writes ``history.csv`` and the checkpoint every epoch, and at the end ``model.pt``
    (``save_classifier``), ``metrics.json`` and ``val_metrics.csv``. ``on_epoch_end(epoch,
    history_row)`` runs after each epoch's checkpoint (raising there stops the run the way
    a kill does). Returns the metrics dict.
    """
    tc = TrainConfig.from_dict(cfg)
    device = torch.device(device)
    out_dir = Path(out_dir)
    class_names = _checked_class_names(model, train_ds, val_ds, class_names)
    # channels-last convolutions: 1.1x the steps per second on CPU (bench_classifier_step.py);
    # moving the trainee moves the classifier it wraps (in place)
    learner = trainee(model, tc.stem_loss).to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(learner, tc)
    dtype = training_dtype(tc.precision, device, "classifier.precision")
    log.info("training steps in %s", str(dtype).removeprefix("torch."))
    fingerprint = Fingerprint.of(cfg, seed, inputs or {})
    steps_per_epoch = len(_loader(train_ds, tc, True, seed, 0, device))
    warmup_steps = round(tc.warmup_epochs * steps_per_epoch)
    evaluations: list[Evaluation] = []

    def validate() -> Evaluation:
        return evaluate(model, _loader(val_ds, tc, False, seed, 0, device), device, seed)

    def run_epoch(epoch: int) -> dict[str, float]:
        train_loss, lr = train_one_epoch(
            learner, _loader(train_ds, tc, True, seed, epoch, device), optimizer, tc, device,
            first_step=epoch * steps_per_epoch, total_steps=tc.epochs * steps_per_epoch,
            warmup_steps=warmup_steps, desc=f"epoch {epoch + 1}/{tc.epochs}", dtype=dtype,
        )  # fmt: skip
        evaluations.append(ev := validate())
        return {"train_loss": train_loss, "lr": lr, "val_loss": ev.loss,
                "val_mAP": ev.mean_ap, "val_F1": ev.macro_f1}  # fmt: skip

    train_epochs(learner, optimizer, fingerprint, tc.epochs, run_epoch, out_dir, HISTORY_COLUMNS,
                 on_epoch_end, log)  # fmt: skip
    # resumed after the last epoch: only the outputs are missing
    final = evaluations[-1] if evaluations else validate()
    return _write_outputs(model, final, cfg, class_names, len(val_ds), out_dir, log)


def _checked_class_names(
    model: nn.Module, train_ds: Dataset, val_ds: Dataset, class_names: list[str] | None
) -> list[str]:
    """The class names (given, else the training set's); both sets must be non-empty."""
    class_names = list(class_names or getattr(train_ds, "class_names", None) or [])
    if len(class_names) != model.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a {model.num_classes}-class classifier; "
            "pass class_names matching the label table"
        )
    for name, ds in (("training", train_ds), ("validation", val_ds)):
        if len(ds) == 0:
            raise ValueError(f"the {name} set is empty; check the split files of the dataset")
    return class_names


def _write_outputs(
    model: nn.Module,
    final: Evaluation,
    cfg: dict[str, Any],
    class_names: list[str],
    num_val: int,
    out_dir: Path,
    log: logging.Logger | Any,
) -> dict:
    """Write metrics.json, val_metrics.csv and model.pt; return the metrics."""
    skipped = [n for n, ap in zip(class_names, final.ap, strict=True) if not math.isfinite(ap)]
    if skipped:
        log.warning("val mAP skips classes without a positive image: %s", ", ".join(skipped))
    metrics = metrics_dict(final, class_names, TrainConfig.from_dict(cfg).epochs, num_val)
    write_table(metrics_table(final, class_names), out_dir / "val_metrics.csv")
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    save_classifier(out_dir / "model.pt", model, cfg, class_names)
    log.info("val mAP %.4f, macro F1 %.4f; wrote %s", final.mean_ap, final.macro_f1, out_dir)
    return metrics


def config_summary(cfg: dict) -> str:
    """The training hyper-parameters in effect, for the log."""
    return json.dumps(asdict(TrainConfig.from_dict(cfg)), sort_keys=True)
