"""Deep supervision of the hybrid's stem: the loss by hand, the hook's lifetime, the
optimiser groups of the wrapper, and a plain ViT refused with the key's name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wsss_core.classifier.model import build_classifier
from wsss_core.classifier.supervision import (
    StemSupervised,
    StemSupervisionError,
    trainee,
    training_loss,
)
from wsss_core.classifier.train import parameter_groups

HYBRID = {"backbone": "hybrid_tiny", "num_classes": 3, "img_size": 32, "pretrained": False,
          "drop_path_rate": 0.0}  # fmt: skip
BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_classifier_step.py"
PLAIN = {"backbone": "vit_tiny_patch16_224", "num_classes": 3, "img_size": 32,
         "patch_size": 8, "pretrained": False, "drop_path_rate": 0.0}  # fmt: skip


def _hybrid(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_classifier(HYBRID).eval()


def test_loss_is_the_classifier_loss_plus_the_weighted_stem_loss():
    model = _hybrid()
    wrapped = StemSupervised(model, weight=0.25).eval()
    images = torch.randn(4, 3, 32, 32)
    targets = torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1]])
    with torch.no_grad():
        stem = model.patch_embed.backbone(images)  # [4, 128, 4, 4]
        aux = stem.mean(dim=(2, 3)) @ wrapped.aux_head.weight.T + wrapped.aux_head.bias
        expected = F.binary_cross_entropy_with_logits(model(images), targets)
        expected = expected + 0.25 * F.binary_cross_entropy_with_logits(aux, targets)
        logits, aux_logits = wrapped(images)
        assert torch.allclose(aux_logits, aux, atol=1e-6)
        assert torch.equal(logits, model(images))  # the classifier's own output
        assert training_loss(wrapped, images, targets).item() == pytest.approx(
            expected.item(), rel=1e-6
        )
        assert training_loss(model, images, targets).item() == pytest.approx(
            F.binary_cross_entropy_with_logits(model(images), targets).item(), rel=1e-6
        )


def test_hook_lives_only_during_a_forward_and_weights_keep_their_names():
    model = _hybrid()
    wrapped = trainee(model, 1.0)
    wrapped(torch.randn(2, 3, 32, 32))
    assert not model.patch_embed.backbone._forward_hooks
    names = set(wrapped.state_dict())
    assert names == {f"classifier.{k}" for k in model.state_dict()} | {
        "aux_head.weight",
        "aux_head.bias",
    }
    assert wrapped.aux_head.in_features == 128  # the stem's last stage
    assert trainee(model, 0.0) is model


def test_stem_loss_trains_the_stem_through_the_auxiliary_head_alone():
    """With the classifier's head cut off from the loss, only the auxiliary path remains:
    the stem gets a gradient, the transformer blocks none."""
    model = _hybrid()
    wrapped = StemSupervised(model, weight=1.0)
    logits, aux_logits = wrapped(torch.randn(2, 3, 32, 32))
    F.binary_cross_entropy_with_logits(aux_logits, torch.ones_like(aux_logits)).backward()
    stem_grad = model.patch_embed.backbone.stages[0][0][0].weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0
    assert model.blocks[0].attn.qkv.weight.grad is None


def test_wrapper_groups_keep_heads_and_undecayed_parameters():
    wrapped = StemSupervised(_hybrid(), weight=1.0)
    groups = parameter_groups(wrapped, weight_decay=0.05, head_lr_mult=10.0)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(wrapped.named_parameters())
    assert len(by_param) == len(named)
    for name in ("classifier.head.weight", "aux_head.weight"):
        assert by_param[id(named[name])]["lr_mult"] == 10.0, name
        assert by_param[id(named[name])]["weight_decay"] == 0.05, name
    for name in ("classifier.pos_embed", "classifier.cls_token", "aux_head.bias"):
        assert by_param[id(named[name])]["weight_decay"] == 0.0, name
    assert by_param[id(named["classifier.blocks.0.attn.qkv.weight"])]["lr_mult"] == 1.0


def test_plain_vit_has_no_stem_to_supervise():
    model = build_classifier(PLAIN)
    with pytest.raises(StemSupervisionError, match="classifier.stem_loss"):
        trainee(model, 1.0)


def test_step_bench_runs_and_reports_each_variant(capsys):
    spec = importlib.util.spec_from_file_location("bench_classifier_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--size", "32", "--batch", "2", "--threads", "1", "--warmup", "1", "--repeats", "1"]
    assert bench.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[1].strip() for line in lines[1:]] == list(bench.VARIANTS)
    assert all(float(line.split("s/step")[1].split("x")[0]) > 0 for line in lines[1:])
