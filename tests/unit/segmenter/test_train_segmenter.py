"""Segmenter training: poly schedule, resume equivalence, config and input errors, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from workflow_utils import load_script

from wsss_core.data.layout import load_gt_mask, read_class_names, read_split
from wsss_core.data.palette import save_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.segmenter.model import build_segmenter, load_segmenter
from wsss_core.segmenter.train import (
    HISTORY_COLUMNS,
    VAL_COLUMNS,
    TrainConfig,
    make_optimizer,
    parse_config,
    set_poly_lr,
    train_segmenter,
    validate,
)
from wsss_core.train.schedules import poly

torch.set_num_threads(1)

CONFIG_MEAN, CONFIG_STD = list(TrainConfig().mean), list(TrainConfig().std)


CONFIG = {
    "backbone": "resnet10t",
    "aspp_channels": 8,
    "low_level_channels": 4,
    "decoder_channels": 8,
    "aspp_rates": [1, 2, 3],
    "epochs": 2,
    "batch_size": 4,
    "crop_size": 32,
    "lr": 0.02,
    "backbone_lr_mult": 0.5,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg") / "data"
    generate_dataset(root, num_classes=2, image_size=40, num_train=8, num_val=2, seed=3)
    return root


def _train(data, out_dir, config=CONFIG, **kwargs):
    return train_segmenter(
        data,
        "train",
        data / "SegmentationClass",
        out_dir,
        config,
        seed=5,
        show_progress=False,
        **kwargs,
    )


class Interrupted(Exception):
    pass


def _stop_after_first_epoch(epoch, row):
    if epoch == 1:
        raise Interrupted


def test_resume_ends_with_the_same_weights(data, tmp_path):
    full = _train(data, tmp_path / "full")
    with pytest.raises(Interrupted):
        _train(data, tmp_path / "killed", on_epoch_end=_stop_after_first_epoch)
    assert not (tmp_path / "killed" / "segmenter.pt").exists()
    assert len(pd.read_csv(tmp_path / "killed" / "history.csv")) == 1
    epochs_run = []
    resumed = _train(data, tmp_path / "killed", on_epoch_end=lambda e, r: epochs_run.append(e))
    assert epochs_run == [2]  # epoch 1 came from the checkpoint
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for name, value in full_state.items():
        assert torch.equal(value, resumed_state[name]), name
    pd.testing.assert_frame_equal(full.history, resumed.history)
    # the training moved the weights (so the comparison above is not vacuous)
    torch.manual_seed(5)
    init = build_segmenter({**parse_config(CONFIG, 3)[0].to_dict()}).state_dict()
    assert not torch.equal(init["classifier.weight"], full_state["classifier.weight"])


def test_history_records_poly_rates_and_finite_losses(data, tmp_path):
    result = _train(data, tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "lr"]
    assert history["epoch"].tolist() == [1, 2]
    # 8 images, batch 4: 2 steps per epoch, 4 in all; the rate of each epoch's last step
    expected = [0.02 * poly(1, 4), 0.02 * poly(3, 4)]
    assert history["lr"].tolist() == pytest.approx(expected, rel=1e-9)
    assert history["train_loss"].gt(0).all()
    model, info = load_segmenter(result.model_path)
    assert info["class_names"] == read_class_names(data)
    assert len(info["class_names"]) == 2
    assert model.cfg.num_classes == 3


class _Constant(torch.nn.Module):
    """A segmenter whose logits are ``logits`` [C] at every pixel of any image."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.cfg = type("Cfg", (), {"num_classes": len(logits)})()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:])


def test_validate_scores_by_hand(data):
    ids = read_split(data, "val")
    # every pixel called background with logits (1, 0, 0): cross-entropy -log softmax
    row = validate(_Constant([1.0, 0.0, 0.0]), data, ids, [0.5] * 3, [0.25] * 3, "cpu")
    truths = np.stack([load_gt_mask(data, i) for i in ids])
    labelled = truths != 255
    background = (truths == 0).sum() / labelled.sum()
    p_bg = np.exp(1) / (np.exp(1) + 2)
    per_image = [
        (np.where(t[t != 255] == 0, -np.log(p_bg), -np.log(1 / (np.exp(1) + 2)))).mean()
        for t in truths
    ]
    assert row["val_loss"] == pytest.approx(np.mean(per_image), rel=1e-5)
    assert row["val_pixel_accuracy"] == pytest.approx(background)
    present = len({int(v) for v in np.unique(truths[labelled])})
    # background IoU = its share of the pixels; each other class present: IoU 0
    assert row["val_mIoU"] == pytest.approx(background / present)


def test_history_holds_validation_columns_and_the_same_weights(data, tmp_path):
    with_val = _train(data, tmp_path / "val", val_split="val")
    history = pd.read_csv(tmp_path / "val" / "history.csv")
    assert list(history.columns) == [*HISTORY_COLUMNS, *VAL_COLUMNS]
    assert history[VAL_COLUMNS].notna().all().all()
    assert ((history["val_mIoU"] >= 0) & (history["val_mIoU"] <= 1)).all()
    model, _ = load_segmenter(with_val.model_path)
    again = validate(model, data, read_split(data, "val"), CONFIG_MEAN, CONFIG_STD, "cpu")
    assert again["val_mIoU"] == pytest.approx(history["val_mIoU"].iloc[-1])
    # validation draws no random number and changes no weight
    plain = _train(data, tmp_path / "plain")
    for key, value in torch.load(plain.model_path, weights_only=True)["state_dict"].items():
        assert torch.equal(
            value, torch.load(with_val.model_path, weights_only=True)["state_dict"][key]
        )
    # val_images 0: no validation
    _train(data, tmp_path / "none", config={**CONFIG, "val_images": 0}, val_split="val")
    assert list(pd.read_csv(tmp_path / "none" / "history.csv").columns) == HISTORY_COLUMNS


def test_optimizer_groups_follow_poly_and_backbone_multiplier():
    net, cfg = parse_config({**CONFIG, "backbone_lr_mult": 0.1, "lr": 0.5}, num_classes=3)
    model = build_segmenter(net)
    optimizer = make_optimizer(model, cfg)
    backbone_group, head_group = optimizer.param_groups
    assert len(backbone_group["params"]) == len(list(model.backbone.parameters()))
    assert len(backbone_group["params"]) + len(head_group["params"]) == len(
        list(model.parameters())
    )
    head_lr = set_poly_lr(optimizer, 3, 10, 0.9)
    assert head_lr == pytest.approx(0.5 * 0.7**0.9)
    assert backbone_group["lr"] == pytest.approx(0.05 * 0.7**0.9)
    assert set_poly_lr(optimizer, 10, 10, 0.9) == 0.0


def test_adamw_is_available():
    net, cfg = parse_config({**CONFIG, "optimizer": "adamw"}, num_classes=3)
    assert isinstance(make_optimizer(build_segmenter(net), cfg), torch.optim.AdamW)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="segmenter.net.learning_rate"):
        parse_config({"learning_rate": 0.1}, num_classes=3)
    with pytest.raises(ValueError, match="optimizer"):
        parse_config({"optimizer": "rmsprop"}, num_classes=3)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1).validate()
    with pytest.raises(ValueError, match="segmenter.net.val_images"):
        TrainConfig(val_images=-1).validate()


def test_missing_pseudo_masks_are_named(data, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(data / "SegmentationClass", masks)
    (masks / "syn_000003.png").unlink()
    with pytest.raises(FileNotFoundError, match="syn_000003.png"):
        train_segmenter(data, "train", masks, tmp_path / "out", CONFIG, show_progress=False)


def test_checkpoint_of_another_config_is_not_resumed(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        _train(data, out, on_epoch_end=_stop_after_first_epoch)
    epochs_run = []
    _train(data, out, config={**CONFIG, "lr": 0.01}, on_epoch_end=lambda e, r: epochs_run.append(e))
    assert epochs_run == [1, 2]


def test_checkpoint_of_other_masks_is_not_resumed(data, tmp_path):
    masks, out = tmp_path / "masks", tmp_path / "run"
    shutil.copytree(data / "SegmentationClass", masks)
    run = dict(data_root=data, split="train", out_dir=out, config=CONFIG, show_progress=False)
    with pytest.raises(Interrupted):
        train_segmenter(mask_dir=masks, on_epoch_end=_stop_after_first_epoch, **run)
    save_mask(masks / "syn_000002.png", np.zeros((40, 40), dtype=np.uint8))  # rerun upstream
    epochs_run = []
    train_segmenter(mask_dir=masks, on_epoch_end=lambda e, r: epochs_run.append(e), **run)
    assert epochs_run == [1, 2]


def test_cli_writes_model_and_history(data, tmp_path, capsys):
    train_script = load_script("segmenter_train")
    out = tmp_path / "cli"
    config = json.dumps({**CONFIG, "epochs": 1})
    argv = ["--masks", str(data / "SegmentationClass"), "--data-root", str(data)]
    argv += ["--split", "train", "--seed", "1", "--device", "cpu", "--threads", "1"]
    argv += ["--config-json", config]
    assert train_script.main([*argv, "--out-dir", str(out)]) == 0
    assert (out / "segmenter.pt").is_file()
    assert len(pd.read_csv(out / "history.csv")) == 1
    code = train_script.main([*argv[:-2], "--config-json", "[1]", "--out-dir", str(out)])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "segmenter_train: error: --config-json must be a JSON object "
        "(config section segmenter.net), got list"
    )
