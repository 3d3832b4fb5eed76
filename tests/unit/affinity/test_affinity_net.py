"""AffinityNet (wsss_core.affinity.net), its training with resume (wsss_core.affinity.train)
and the train_affinity / random_walk workflow scripts on a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from workflow_utils import load_script

from wsss_core.affinity.net import (
    AffinityConfigError,
    AffinityNetConfig,
    build_affinity_net,
    image_features,
    load_affinity_net,
)
from wsss_core.affinity.pairs import pair_affinities
from wsss_core.affinity.train import (
    HISTORY_COLUMNS,
    VAL_COLUMNS,
    input_files,
    split_config,
    train,
    validate,
)
from wsss_core.cams.store import CamRecord, write_store
from wsss_core.classifier.model import build_classifier, save_classifier
from wsss_core.data.datasets import VOCSegmentation
from wsss_core.data.layout import load_gt_mask, read_split
from wsss_core.data.palette import load_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.data.transforms import eval_transform, train_transform

ROOT = Path(__file__).resolve().parents[3]
CLS_CFG = {"backbone": "hybrid_tiny", "num_classes": 3, "img_size": 32, "pretrained": False}
STEM_TAP = "patch_embed.backbone.stages.1"  # hybrid_tiny stem stage 2: stride 4


def tiny_classifier():
    torch.manual_seed(0)
    model = build_classifier(CLS_CFG).eval()
    info = {"model_config": dict(CLS_CFG), "class_names": ["a", "b", "c"],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip
    return model, info


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    generate_dataset(root, num_classes=3, image_size=32, num_train=8, num_val=2, seed=1)
    return root


def test_vit_net_shapes_affinities_and_frozen_backbone():
    model, info = tiny_classifier()
    cfg = AffinityNetConfig(vit_blocks=(-1, 0), taps=(STEM_TAP,), level_dim=8, feature_dim=16,
                            output_stride=4)  # fmt: skip
    net, net_info = build_affinity_net(cfg, model, info)
    assert net_info["input_size"] == 32 and net_info["mean"] == [0.5, 0.5, 0.5]
    # levels: the stem tap (64 channels, 8x8) then blocks 1 and 0 (128 channels, 4x4)
    assert [c.in_channels for c in net.project] == [64, 128, 128]
    images = torch.randn(2, 3, 32, 32)
    feats = net(images)
    assert feats.shape == (2, 16, 8, 8)
    assert feats.min() >= -1  # ELU output
    aff = pair_affinities(feats, radius=3)
    inside = aff > 0
    # radius 3 on 8x8: offsets (0,1) 56 pairs, (0,2) 48, (1,0) 56, (1,±1) 2x49, (1,±2) 2x42,
    # (2,0) 48, (2,±1) 2x42, (2,±2) 2x36: 546 in-grid pairs per image, all with a > 0
    assert int(inside.sum()) == 2 * 546
    assert aff.max() <= 1
    # a rectangular input gives a rectangular grid (dynamic image size)
    assert net(torch.randn(1, 3, 32, 48)).shape == (1, 16, 8, 12)
    # frozen: one optimiser step moves the head only, and the backbone stays in eval mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    assert not net.levels.training and net.fuse.training
    opt = torch.optim.SGD(net.head_parameters(), lr=0.1)
    net(images).pow(2).mean().backward()
    opt.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("project.", "fuse.")) for k in changed)
    assert all(p.grad is None for p in net.levels.parameters())


def test_cnn_backbone_shapes():
    cfg = AffinityNetConfig(backbone="resnet18", cnn_out_indices=(1, 2), level_dim=8,
                            feature_dim=8, output_stride=4)  # fmt: skip
    net, info = build_affinity_net(cfg)
    assert info["input_size"] is None and len(info["mean"]) == 3
    assert [c.in_channels for c in net.project] == [64, 128]
    assert net(torch.randn(1, 3, 32, 40)).shape == (1, 8, 8, 10)


def test_config_errors_name_the_key():
    with pytest.raises(AffinityConfigError, match="unknown affinity.net key"):
        split_config({"epochs": 2, "learning_rate": 0.1})
    with pytest.raises(AffinityConfigError, match="affinity.net.radius"):
        split_config({"radius": 1})
    with pytest.raises(AffinityConfigError, match="not_a_model"):
        split_config({"backbone": "not_a_model"})
    net_cfg, tc = split_config({"backbone_lr_mult": 0.0})
    assert net_cfg.freeze_backbone and tc.backbone_lr_mult == 0
    assert not split_config({"backbone_lr_mult": 0.5})[0].freeze_backbone
    model, info = tiny_classifier()
    with pytest.raises(AffinityConfigError, match="no module 'patch_embed.nothing'"):
        build_affinity_net(AffinityNetConfig(taps=("patch_embed.nothing",)), model, info)
    with pytest.raises(AffinityConfigError, match="block 7"):
        build_affinity_net(AffinityNetConfig(vit_blocks=(7,)), model, info)


def _train_run(
    dataset: Path, out_dir: Path, cfg: dict, stop_after: int | None = None, on_epoch_end=None
):
    model, info = tiny_classifier()
    net_cfg, tc = split_config(cfg)
    net, net_info = build_affinity_net(net_cfg, model, info)
    ds = VOCSegmentation(
        dataset, "train", transform=train_transform(32, tc.scale_range, net_info["mean"],
                                                    net_info["std"], tc.jitter),
    )  # fmt: skip

    def stop(epoch, _row):
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt("killed")

    inputs = input_files(ds, None)
    return train(net, net_info, ds, cfg, out_dir, "cpu", seed=3, on_epoch_end=stop,
                 inputs=inputs), net  # fmt: skip


def test_training_resumes_to_the_same_weights(dataset, tmp_path):
    cfg = {"vit_blocks": [-1], "taps": [STEM_TAP], "level_dim": 8, "feature_dim": 8,
           "output_stride": 4, "radius": 3, "epochs": 3, "batch_size": 4, "lr": 0.01,
           "backbone_lr_mult": 0.1}  # fmt: skip
    history, straight = _train_run(dataset, tmp_path / "a", cfg)
    with pytest.raises(KeyboardInterrupt):
        _train_run(dataset, tmp_path / "b", cfg, stop_after=1)
    assert not (tmp_path / "b" / "affinity.pt").exists()
    assert len(pd.read_csv(tmp_path / "b" / "history.csv")) == 1
    resumed_history, resumed = _train_run(dataset, tmp_path / "b", cfg)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in resumed_history]
    frame = pd.read_csv(tmp_path / "a" / "history.csv")
    assert list(frame.columns[:3]) == ["epoch", "train_loss", "lr"]
    assert frame["epoch"].tolist() == [1, 2, 3]
    # poly decay: the last rate is below the first; fine-tuning moved the backbone too
    assert frame["lr"].iloc[-1] < frame["lr"].iloc[0] <= 0.01
    start = tiny_classifier()[0].state_dict()
    moved = straight.levels.vit.state_dict()
    assert any(not torch.equal(start[k], moved[k]) for k in start)
    # the saved net reloads to the same features
    loaded, info = load_affinity_net(tmp_path / "a" / "affinity.pt")
    assert info["radius"] == 3 and info["input_size"] == 32
    image = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    straight.eval()
    torch.testing.assert_close(
        image_features(loaded, image, info, "cpu"), image_features(straight, image, info, "cpu")
    )
    # another config does not resume from this checkpoint: it is set aside, training restarts
    epochs = []
    _train_run(dataset, tmp_path / "a", {**cfg, "lr": 0.02}, on_epoch_end=epochs.append)
    assert epochs == [1, 2, 3]
    assert (tmp_path / "a" / "checkpoints" / "superseded.pt").is_file()


def test_scripts_train_then_walk(dataset, tmp_path):
    model, info = tiny_classifier()
    save_classifier(tmp_path / "model.pt", model, CLS_CFG, info["class_names"])
    ids = read_split(dataset, "train")
    # seeds: ground truth; relevance maps: blurred ground truth on a 4x4 grid
    records = []
    for image_id in ids:
        gt = load_gt_mask(dataset, image_id)
        classes = sorted(int(c) - 1 for c in np.unique(gt) if c not in (0, 255))
        grid = torch.nn.functional.adaptive_avg_pool2d(
            torch.from_numpy(np.stack([(gt == c + 1) for c in classes]).astype(np.float32)),
            (4, 4),
        )
        records.append(CamRecord(image_id, grid.numpy(), classes, gt.shape))
    write_store(tmp_path / "cams.h5", records, "blurred_gt")
    cfg = {"vit_blocks": [-1], "taps": [STEM_TAP], "level_dim": 8, "feature_dim": 8,
           "output_stride": 4, "radius": 3, "epochs": 1, "batch_size": 4}  # fmt: skip
    train_script = load_script("affinity_train")
    code = train_script.main([
        "--classifier", str(tmp_path / "model.pt"), "--seeds", str(dataset / "SegmentationClass"),
        "--data-root", str(dataset), "--split", "train", "--config-json", json.dumps(cfg),
        "--seed", "0", "--device", "cpu", "--threads", "1", "--out-dir", str(tmp_path / "aff"),
    ])  # fmt: skip
    assert code == 0 and (tmp_path / "aff" / "affinity.pt").is_file()
    walk_script = load_script("walk_masks")
    walk = {"alpha": 4, "beta": 8, "logt": 4, "radius": 3, "normalise": True,
            "crf": {"iterations": 2}}  # fmt: skip
    for shard in (0, 1):
        code = walk_script.main([
            "--store", str(tmp_path / "cams.h5"), "--affinity", str(tmp_path / "aff/affinity.pt"),
            "--data-root", str(dataset), "--shard", str(shard), "--num-shards", "2",
            "--config-json", json.dumps(walk), "--device", "cpu",
            "--out-dir", str(tmp_path / f"rw{shard}"),
            "--crf-out-dir", str(tmp_path / f"crf{shard}"),
        ])  # fmt: skip
        assert code == 0
    written = sorted(p.stem for p in (tmp_path / "rw0").glob("*.png")) + sorted(
        p.stem for p in (tmp_path / "rw1").glob("*.png")
    )
    assert sorted(written) == sorted(ids)
    for image_id in ids:
        shard = 0 if (tmp_path / "rw0" / f"{image_id}.png").exists() else 1
        for folder in (f"rw{shard}", f"crf{shard}"):
            mask = load_mask(tmp_path / folder / f"{image_id}.png")
            gt = load_gt_mask(dataset, image_id)
            assert mask.shape == gt.shape
            allowed = {0} | {int(c) for c in np.unique(gt) if c not in (0, 255)}
            assert set(np.unique(mask).tolist()) <= allowed
    # a seed folder that lacks masks stops with a message naming the first missing one
    (tmp_path / "few").mkdir()
    code = train_script.main([
        "--classifier", str(tmp_path / "model.pt"), "--seeds", str(tmp_path / "few"),
        "--data-root", str(dataset), "--split", "train", "--config-json", json.dumps(cfg),
        "--seed", "0", "--device", "cpu", "--out-dir", str(tmp_path / "aff2"),
    ])  # fmt: skip
    assert code == 2 and not (tmp_path / "aff2" / "affinity.pt").exists()


class _FixedFeatures(torch.nn.Module):
    """A net whose features are always ``features`` [1, D, h, w], whatever the image."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.features = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features.expand(images.shape[0], -1, -1, -1)


def test_validate_scores_ground_truth_pairs_by_hand():
    # a 2 x 2 grid, radius 2: pairs (0,0)-(0,1) background, (0,0)-(1,0) and (0,1)-(1,0)
    # negative; every pair touching the ignored cell (1,1) left out
    features = torch.tensor([[[[0.0, 0.1], [0.72, 5.0]]]])
    mask = torch.tensor([[0, 0], [1, 255]])
    net = _FixedFeatures(features).train()
    row = validate(net, [(torch.zeros(3, 8, 8), mask)], radius=2, device=torch.device("cpu"))
    assert net.training  # back in the mode it came in
    a_bg = np.exp(-0.1)  # 0.905: right (> 0.5)
    a_neg = [np.exp(-0.72), np.exp(-0.62)]  # 0.487 right (< 0.5), 0.538 wrong
    eps = 1e-5
    expected = -np.log(a_bg + eps) / 2 + np.mean([-np.log(1 + eps - a) for a in a_neg])
    assert row["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert row["val_bg_pos_acc"] == 1.0
    assert np.isnan(row["val_fg_pos_acc"])  # no foreground pair
    assert row["val_neg_acc"] == 0.5
    # two images pool their pairs: the same image twice scores the same
    twice = validate(net, [(torch.zeros(3, 8, 8), mask)] * 2, 2, torch.device("cpu"))
    assert twice["val_loss"] == pytest.approx(row["val_loss"])
    assert twice["val_neg_acc"] == 0.5


def test_training_with_validation_adds_its_columns(dataset, tmp_path):
    cfg = {"vit_blocks": [-1], "taps": [STEM_TAP], "level_dim": 8, "feature_dim": 8,
           "output_stride": 4, "radius": 3, "epochs": 2, "batch_size": 4}  # fmt: skip
    model, info = tiny_classifier()
    net_cfg, tc = split_config(cfg)
    net, net_info = build_affinity_net(net_cfg, model, info)
    transform = train_transform(32, tc.scale_range, net_info["mean"], net_info["std"], 0.0)
    ds = VOCSegmentation(dataset, "train", transform=transform)
    val_transform = eval_transform(32, net_info["mean"], net_info["std"])
    val_ds = VOCSegmentation(
        dataset, "val", ids=read_split(dataset, "val")[:1], transform=val_transform
    )
    inputs = input_files(ds, None, val_ds)
    assert [p.name for p in inputs["val_masks"]] == [f"{read_split(dataset, 'val')[0]}.png"]
    history = train(net, net_info, ds, cfg, tmp_path, "cpu", seed=0, inputs=inputs, val_ds=val_ds)
    frame = pd.read_csv(tmp_path / "history.csv")
    assert list(frame.columns) == [*HISTORY_COLUMNS, *VAL_COLUMNS]
    assert frame["val_loss"].tolist() == pytest.approx([r["val_loss"] for r in history])
    assert ((frame["val_neg_acc"] >= 0) & (frame["val_neg_acc"] <= 1)).all()
    # validation draws no random number: the weights equal those of a run without it
    model, info = tiny_classifier()
    plain, _ = build_affinity_net(net_cfg, model, info)
    train(plain, net_info, ds, cfg, tmp_path / "plain", "cpu", seed=0, inputs=input_files(ds, None))
    for key, value in net.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key]), key
    assert list(pd.read_csv(tmp_path / "plain" / "history.csv").columns) == HISTORY_COLUMNS
