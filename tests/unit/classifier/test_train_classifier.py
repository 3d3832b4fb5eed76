"""Training loop: learning, outputs, schedule, and resume-after-kill equivalence (CPU, tiny)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from wsss_core.classifier.model import ClassifierConfigError, build_classifier, load_classifier
from wsss_core.classifier.supervision import trainee
from wsss_core.classifier.train import (
    HISTORY_COLUMNS,
    TrainConfig,
    build_optimizer,
    parameter_groups,
    set_learning_rate,
    train,
    train_one_epoch,
)
from wsss_core.train.schedules import warmup_cosine

NAMES = ["red", "green", "blue"]
CFG = {
    "backbone": "hybrid_tiny",
    "num_classes": 3,
    "img_size": 32,
    "pretrained": False,
    "drop_path_rate": 0.1,  # stochastic depth draws from the global RNG: resume must restore it
    "optimizer": "adamw",
    "lr": 2e-3,
    "head_lr_mult": 2.0,
    "weight_decay": 0.05,
    "batch_size": 8,
    "epochs": 3,
    "warmup_epochs": 1,
    "grad_clip": 5.0,
    "num_workers": 0,
}


class ColourBlobs(Dataset):
    """Class k present <=> a bright square in channel k; noise drawn per access from torch's
    global generator (as the real augmentations are)."""

    def __init__(self, n: int, seed: int, size: int = 32) -> None:
        rng = np.random.default_rng(seed)
        self.labels = (rng.random((n, 3)) < 0.5).astype(np.float32)
        self.labels[self.labels.sum(1) == 0, rng.integers(3)] = 1.0
        self.images = torch.zeros(n, 3, size, size)
        for i in range(n):
            for k in np.flatnonzero(self.labels[i]):
                y, x = rng.integers(0, size - 12, 2)
                self.images[i, k, y : y + 12, x : x + 12] = 1.0
        self.class_names = NAMES

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i] + 0.1 * torch.randn_like(self.images[i])
        return image, torch.from_numpy(self.labels[i])


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fresh_model(init_seed: int):
    torch.manual_seed(init_seed)
    return build_classifier(CFG)


class Killed(Exception):
    pass


def _kill_after(epoch_to_die: int):
    def hook(epoch: int, row: dict) -> None:
        if epoch == epoch_to_die:
            raise Killed

    return hook


@pytest.mark.parametrize("stem_loss", [0.0, 0.5])
def test_resume_after_kill_gives_the_same_weights(tmp_path, stem_loss):
    """Also with the stem's auxiliary head, whose weights only the checkpoint holds."""
    cfg = {**CFG, "stem_loss": stem_loss}
    train_ds, val_ds = ColourBlobs(20, 0), ColourBlobs(8, 1)
    whole = _fresh_model(0)
    train(whole, train_ds, val_ds, cfg, tmp_path / "whole", "cpu", seed=5)

    killed = _fresh_model(0)
    with pytest.raises(Killed):
        train(
            killed,
            train_ds,
            val_ds,
            cfg,
            tmp_path / "killed",
            "cpu",
            seed=5,
            on_epoch_end=_kill_after(1),
        )
    assert (tmp_path / "killed" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "killed" / "model.pt").exists()
    assert len(pd.read_csv(tmp_path / "killed" / "history.csv")) == 1

    # The rerun builds its model anew (another init, other RNG draws) and resumes.
    resumed = _fresh_model(123)
    torch.rand(17)
    train(resumed, train_ds, val_ds, cfg, tmp_path / "killed", "cpu", seed=5)

    expected = whole.state_dict()
    got = resumed.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "whole" / "history.csv"),
        pd.read_csv(tmp_path / "killed" / "history.csv"),
    )
    saved, info = load_classifier(tmp_path / "killed" / "model.pt")
    assert info["class_names"] == NAMES
    for key, value in saved.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_learns_and_writes_consistent_outputs(tmp_path):
    """The demo's recipe (stem_loss 1): mAP 0.96 after 4 epochs, 0.90 without it."""
    cfg = {**CFG, "epochs": 4, "drop_path_rate": 0.0, "grad_clip": None, "stem_loss": 1.0}
    train_ds, val_ds = ColourBlobs(48, 2), ColourBlobs(24, 3)
    metrics = train(_fresh_model(1), train_ds, val_ds, cfg, tmp_path, "cpu", seed=0)

    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert metrics["mAP"] >= 0.9  # the colour of a square is an easy cue

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    assert on_disk["mAP"] == pytest.approx(history["val_mAP"].iloc[-1])
    assert on_disk["mAP"] == pytest.approx(np.mean(list(on_disk["per_class_AP"].values())))
    assert on_disk["macro_F1"] == pytest.approx(history["val_F1"].iloc[-1])
    assert on_disk["val_loss"] == pytest.approx(history["val_loss"].iloc[-1])

    table = pd.read_csv(tmp_path / "val_metrics.csv")
    assert table["class"].tolist() == [*NAMES, "mean"]
    assert list(table.columns) == ["class", "AP", "F1", "precision", "recall"]
    per_class = table.iloc[:3]
    assert table["AP"].iloc[3] == pytest.approx(per_class["AP"].mean())
    assert per_class["AP"].tolist() == pytest.approx(
        [100 * on_disk["per_class_AP"][n] for n in NAMES]
    )
    f1 = per_class["F1"].to_numpy()
    p, r = per_class["precision"].to_numpy(), per_class["recall"].to_numpy()
    assert f1 == pytest.approx(2 * p * r / np.maximum(p + r, 1e-12))

    # The final learning rate is the end of the cosine: (near) zero.
    steps = 4 * (48 // 8)
    assert history["lr"].iloc[-1] == pytest.approx(cfg["lr"] * warmup_cosine(steps - 1, steps, 6))


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _one_epoch_in(dtype: torch.dtype) -> tuple[float, torch.Tensor, torch.optim.Optimizer]:
    """(mean loss, weight change, optimiser) of one epoch from the same weights and batches."""
    torch.manual_seed(3)
    learner = trainee(build_classifier(CFG), 1.0)
    start = _flat(learner)
    tc = TrainConfig.from_dict({**CFG, "grad_clip": None})
    loader = torch.utils.data.DataLoader(ColourBlobs(24, 4), batch_size=8)
    optimizer = build_optimizer(learner, tc)
    loss, _ = train_one_epoch(learner, loader, optimizer, tc, torch.device("cpu"), 0, 3, 1,
                              "test", dtype=dtype)  # fmt: skip
    assert all(p.dtype == torch.float32 for p in learner.parameters())
    return loss, _flat(learner) - start, optimizer


def test_bf16_steps_follow_the_fp32_steps():
    """bf16 autocast changes the arithmetic, not the training: the same batches give nearly
    the same loss and weight change, and the weights and the optimiser state stay float32."""
    loss32, change32, _ = _one_epoch_in(torch.float32)
    loss16, change16, optimizer = _one_epoch_in(torch.bfloat16)
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert loss16 != loss32  # the steps did run in bfloat16
    assert all(s["exp_avg"].dtype == torch.float32 for s in optimizer.state.values())
    assert torch.nn.functional.cosine_similarity(change32, change16, dim=0) > 0.95  # 0.978


def test_learns_in_bf16(tmp_path, monkeypatch):
    """precision bf16 trains the recipe of the learning test as well (a CPU made to report
    native bfloat16, so that the test runs on any machine)."""
    monkeypatch.setattr("wsss_core.runtime.cpu_flags", lambda: frozenset({"avx512_bf16"}))
    cfg = {**CFG, "epochs": 4, "drop_path_rate": 0.0, "grad_clip": None, "stem_loss": 1.0,
           "precision": "bf16"}  # fmt: skip
    metrics = train(_fresh_model(1), ColourBlobs(48, 2), ColourBlobs(24, 3), cfg, tmp_path, "cpu")
    assert metrics["mAP"] >= 0.9


def test_finished_run_rerun_only_rewrites_outputs(tmp_path):
    cfg = {**CFG, "epochs": 1}
    train_ds, val_ds = ColourBlobs(8, 4), ColourBlobs(4, 5)
    model = _fresh_model(2)
    first = train(model, train_ds, val_ds, cfg, tmp_path, "cpu", seed=1)
    (tmp_path / "model.pt").unlink()
    (tmp_path / "metrics.json").unlink()
    rerun_model = _fresh_model(9)
    second = train(rerun_model, train_ds, val_ds, cfg, tmp_path, "cpu", seed=1)
    assert second == first
    for key, value in model.state_dict().items():
        assert torch.equal(rerun_model.state_dict()[key], value)
    assert (tmp_path / "model.pt").is_file()


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    expected, got = a.state_dict(), b.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


@pytest.mark.parametrize("change", ["settings", "inputs"])
def test_checkpoint_of_other_settings_or_inputs_is_set_aside(tmp_path, caplog, change):
    """A killed run's checkpoint is not resumed by a run with another lr or other label
    files: it is moved to superseded.pt (one log line) and the rerun equals a fresh run."""
    train_ds, val_ds = ColourBlobs(8, 4), ColourBlobs(4, 5)
    cfg = {**CFG, "epochs": 2}
    labels = tmp_path / "labels.csv"
    labels.write_text("id,red\na,1\n")
    inputs = {"label_tables": [labels]}
    run = tmp_path / "run"
    with pytest.raises(Killed):
        train(_fresh_model(0), train_ds, val_ds, cfg, run, "cpu", inputs=inputs,
              on_epoch_end=_kill_after(1))  # fmt: skip
    if change == "settings":
        cfg = {**cfg, "lr": 1e-4}
    else:
        labels.write_text("id,red\na,0\n")  # the label table was remade
    epochs = []
    caplog.set_level("INFO")
    rerun = _fresh_model(0)
    train(rerun, train_ds, val_ds, cfg, run, "cpu", inputs=inputs,
          on_epoch_end=lambda e, r: epochs.append(e))  # fmt: skip
    assert epochs == [1, 2]
    assert (run / "checkpoints" / "superseded.pt").is_file()
    set_aside = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert len(set_aside) == 1
    assert ("lr: 0.002 -> 0.0001" if change == "settings" else "other input files") in set_aside[0]
    assert not any("resuming" in r.getMessage() for r in caplog.records)
    fresh = _fresh_model(0)
    train(fresh, train_ds, val_ds, cfg, tmp_path / "fresh", "cpu", inputs=inputs)
    _assert_same_weights(fresh, rerun)
    assert (run / "history.csv").read_bytes() == (tmp_path / "fresh" / "history.csv").read_bytes()


def test_parameter_groups_and_learning_rates():
    model = _fresh_model(0)
    groups = parameter_groups(model, weight_decay=0.05, head_lr_mult=10.0)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(by_param) == len(named)  # every parameter in exactly one group
    assert by_param[id(named["head.weight"])]["lr_mult"] == 10.0
    assert by_param[id(named["head.weight"])]["weight_decay"] == 0.05
    assert by_param[id(named["head.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["blocks.0.attn.qkv.weight"])]["lr_mult"] == 1.0
    for name in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"):
        assert by_param[id(named[name])]["weight_decay"] == 0.0, name

    optimizer = build_optimizer(model, TrainConfig.from_dict({**CFG, "head_lr_mult": 10.0}))
    assert isinstance(optimizer, torch.optim.AdamW)
    backbone_lr = set_learning_rate(optimizer, 0.01, 0.5)
    assert backbone_lr == pytest.approx(0.005)
    rates = sorted({g["lr"] for g in optimizer.param_groups})
    assert rates == pytest.approx([0.005, 0.05])
    sgd = build_optimizer(model, TrainConfig.from_dict({**CFG, "optimizer": "sgd"}))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9


def test_sgd_training_runs(tmp_path):
    cfg = {**CFG, "optimizer": "sgd", "lr": 0.05, "epochs": 1}
    metrics = train(_fresh_model(0), ColourBlobs(8, 0), ColourBlobs(4, 1), cfg, tmp_path, "cpu")
    assert math.isfinite(metrics["val_loss"])


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"optimizer": "adam"}, "optimizer"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"grad_clip": 0}, "grad_clip"),
        ({"min_lr_factor": 2.0}, "min_lr_factor"),
        ({"stem_loss": -0.5}, "stem_loss"),
        ({"precision": "fp16"}, "precision"),
    ],
)
def test_bad_training_config_names_the_key(change, key):
    with pytest.raises(ClassifierConfigError, match=f"classifier.{key}"):
        TrainConfig.from_dict({**CFG, **change})


def test_class_names_must_match_the_head(tmp_path):
    ds = ColourBlobs(4, 0)
    with pytest.raises(ValueError, match="class names"):
        train(_fresh_model(0), ds, ds, CFG, tmp_path, "cpu", class_names=["only", "two"])
