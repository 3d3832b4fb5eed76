"""AffinityNet: features whose L1 distances give pixel affinities a_ij = exp(-mean|f_i - f_j|).

As in PSA (``network/resnet38_aff.py``), feature maps of several depths of a backbone are
each projected by a 1x1 convolution with ELU, brought to one grid, concatenated and fused by
a 1x1 convolution with ELU. Two backbones:

- ``classifier``: the fine-tuned ViT classifier. Its patch tokens after the blocks listed in
  ``vit_blocks`` (final LayerNorm applied, prefix tokens dropped) are reshaped to the token
  grid; ``taps`` adds the outputs of named conv modules, e.g. the finer stages of a hybrid's
  stem (``patch_embed.backbone.stages.1``);
- any timm CNN name, built with ``features_only=True`` and ``cnn_out_indices`` (weights:
  ``cnn_pretrained`` false, ``"hub"`` or a file).

The output grid is the input size divided by ``output_stride`` (levels resized bilinearly),
so the affinity grid can be finer than the ViT's patch grid. The backbone always runs in eval
mode (frozen BatchNorm statistics, no dropout); ``freeze_backbone`` also stops its gradients.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from wsss_core.classifier.levels import ViTLevels
from wsss_core.config import schema_field
from wsss_core.data.transforms import eval_transform, image_to_tensor
from wsss_core.io import save_torch

CLASSIFIER = "classifier"


class AffinityConfigError(ValueError):
    """An affinity config key is missing or has a wrong value."""


def _int_tuple(value: Any, key: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise AffinityConfigError(f"affinity.net.{key} must be a list of integers, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class AffinityNetConfig:
    """The architecture (keys of the config's ``affinity.net`` section; defaults: the config
    schema's, its lists as tuples). ``freeze_backbone`` is no config key: training sets it
    from ``backbone_lr_mult`` 0."""

    backbone: str = schema_field("affinity.net.backbone")
    vit_blocks: tuple[int, ...] = schema_field("affinity.net.vit_blocks", tuple)
    taps: tuple[str, ...] = schema_field("affinity.net.taps", tuple)
    cnn_out_indices: tuple[int, ...] = schema_field("affinity.net.cnn_out_indices", tuple)
    cnn_pretrained: bool | str = schema_field("affinity.net.cnn_pretrained")
    level_dim: int = schema_field("affinity.net.level_dim")
    feature_dim: int = schema_field("affinity.net.feature_dim")
    output_stride: int = schema_field("affinity.net.output_stride")
    freeze_backbone: bool = True

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> AffinityNetConfig:
        """Read this class's keys from ``cfg`` (other keys belong to training)."""
        values = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg}
        for key in ("vit_blocks", "cnn_out_indices"):
            if key in values:
                values[key] = _int_tuple(values[key], key)
        if "taps" in values:
            taps = values["taps"]
            if not isinstance(taps, list | tuple) or not all(isinstance(t, str) for t in taps):
                raise AffinityConfigError(
                    f"affinity.net.taps must be a list of module names, got {taps!r}"
                )
            values["taps"] = tuple(taps)
        net_cfg = cls(**values)
        net_cfg.check()
        return net_cfg

    def check(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise AffinityConfigError(
                f"affinity.net.backbone must be '{CLASSIFIER}' or a timm CNN name, "
                f"got {self.backbone!r}"
            )
        if self.backbone != CLASSIFIER and not timm.is_model(self.backbone):
            raise AffinityConfigError(
                f"affinity.net.backbone '{self.backbone}' is neither '{CLASSIFIER}' nor a timm "
                "model name (e.g. resnet18, resnet50)"
            )
        for key in ("level_dim", "feature_dim", "output_stride"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AffinityConfigError(f"affinity.net.{key} must be a positive integer")
        if self.backbone == CLASSIFIER and not self.vit_blocks and not self.taps:
            raise AffinityConfigError("affinity.net: vit_blocks and taps are both empty")
        if (
            self.cnn_pretrained not in (False, None, "hub")
            and not Path(str(self.cnn_pretrained)).is_file()
        ):
            raise AffinityConfigError(
                f"affinity.net.cnn_pretrained: weights file {self.cnn_pretrained} does not "
                'exist; use false, "hub" or the path of a downloaded weights file'
            )
        if not isinstance(self.freeze_backbone, bool):
            raise AffinityConfigError("affinity.net.freeze_backbone must be true or false")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# --------------------------------------------------------------------------------------
# Backbones: image [B, 3, H, W] -> list of feature maps [B, C_l, h_l, w_l]


class CNNLevels(nn.Module):
    """Feature maps of a timm CNN built with ``features_only=True``."""

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.cnn(x))


def build_cnn(cfg: AffinityNetConfig, pretrained: bool | str | None = None) -> nn.Module:
    """The timm CNN of ``cfg`` (features_only); ``pretrained`` overrides cfg.cnn_pretrained."""
    source = cfg.cnn_pretrained if pretrained is None else pretrained
    kwargs: dict[str, Any] = {"features_only": True, "out_indices": cfg.cnn_out_indices}
    if source in (False, None):
        return timm.create_model(cfg.backbone, pretrained=False, **kwargs)
    if source == "hub":
        return timm.create_model(cfg.backbone, pretrained=True, **kwargs)
    return timm.create_model(
        cfg.backbone, pretrained=True, pretrained_cfg_overlay={"file": str(source)}, **kwargs
    )


def cnn_normalization(cnn: nn.Module) -> tuple[list[float], list[float]]:
    pretrained_cfg = getattr(cnn, "pretrained_cfg", None) or {}
    mean = pretrained_cfg.get("mean", IMAGENET_DEFAULT_MEAN)
    std = pretrained_cfg.get("std", IMAGENET_DEFAULT_STD)
    return [float(m) for m in mean], [float(s) for s in std]


# --------------------------------------------------------------------------------------
# The network


class AffinityNet(nn.Module):
    """backbone levels -> 1x1 conv + ELU each -> resize to H/stride x W/stride -> concat ->
    1x1 conv + ELU: features [B, feature_dim, H/stride, W/stride]."""

    def __init__(self, levels: nn.Module, channels: list[int], cfg: AffinityNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.levels = levels
        self.project = nn.ModuleList(nn.Conv2d(c, cfg.level_dim, 1, bias=False) for c in channels)
        self.fuse = nn.Conv2d(cfg.level_dim * len(channels), cfg.feature_dim, 1, bias=False)
        for conv in self.project:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.fuse.weight, gain=4)  # PSA's initialisation
        if cfg.freeze_backbone:
            self.levels.requires_grad_(False)

    def train(self, mode: bool = True) -> AffinityNet:
        super().train(mode)
        self.levels.eval()
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.project.parameters(), *self.fuse.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.levels.parameters() if p.requires_grad]

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        stride = self.cfg.output_stride
        return max(1, math.ceil(height / stride)), max(1, math.ceil(width / stride))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_backbone):
            maps = self.levels(images)
        size = self.grid_size(*images.shape[-2:])
        projected = []
        for conv, level in zip(self.project, maps, strict=True):
            out = F.elu(conv(level))
            if tuple(out.shape[-2:]) != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            projected.append(out)
        return F.elu(self.fuse(torch.cat(projected, dim=1)))


def _level_channels(levels: nn.Module, probe_size: int) -> list[int]:
    """Channels of each level, from one forward pass of a blank image."""
    with torch.no_grad():
        outs = levels(torch.zeros(1, 3, probe_size, probe_size))
    return [int(o.shape[1]) for o in outs]


def build_affinity_net(
    cfg: AffinityNetConfig,
    classifier: nn.Module | None = None,
    classifier_info: Mapping[str, Any] | None = None,
    cnn_pretrained: bool | str | None = None,
) -> tuple[AffinityNet, dict[str, Any]]:
    """The AffinityNet of ``cfg`` and its input info (``mean``, ``std``, ``input_size``).

    With the classifier backbone, ``classifier``/``classifier_info`` come from
    ``wsss_core.classifier.model.load_classifier``; the ViT's weights are the classifier's.
    """
    if cfg.backbone == CLASSIFIER:
        if classifier is None or classifier_info is None:
            raise ValueError("the classifier backbone needs the loaded classifier and its info")
        input_size = int(classifier_info["model_config"]["img_size"])
        levels: nn.Module = ViTLevels(
            classifier, cfg.vit_blocks, cfg.taps, "affinity.net", AffinityConfigError
        )
        mean, std = list(classifier_info["mean"]), list(classifier_info["std"])
        backbone_config: dict | None = dict(classifier_info["model_config"])
    else:
        cnn = build_cnn(cfg, cnn_pretrained)
        levels = CNNLevels(cnn)
        mean, std = cnn_normalization(cnn)
        input_size = None
        backbone_config = None
    levels.eval()
    probe = input_size or 64
    net = AffinityNet(levels, _level_channels(levels, probe), cfg)
    info = {"mean": mean, "std": std, "input_size": input_size, "backbone_config": backbone_config}
    return net, info


# --------------------------------------------------------------------------------------
# Saving, loading and inference


def save_affinity_net(
    path: str | os.PathLike, net: AffinityNet, info: Mapping[str, Any], extra: Mapping | None = None
) -> None:
    """Write the net (config, all weights, input info) to ``path`` atomically."""
    payload = {
        "net_config": net.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "mean": list(info["mean"]),
        "std": list(info["std"]),
        "input_size": info["input_size"],
        "backbone_config": info["backbone_config"],
        **dict(extra or {}),
    }
    save_torch(path, payload)


def load_affinity_net(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[AffinityNet, dict[str, Any]]:
    """Rebuild a saved AffinityNet (never downloading) -> (net in eval mode, info dict with
    ``mean``, ``std``, ``input_size``, ``net_config`` and what training stored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AffinityNet {path} does not exist; run rule train_affinity")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        # the weights are in the file: no pretrained CNN weights are needed (or downloaded)
        cfg = AffinityNetConfig.from_dict({**payload["net_config"], "cnn_pretrained": False})
        state = payload["state_dict"]
    except Exception as err:  # noqa: BLE001 - torch raises many kinds here
        raise ValueError(
            f"AffinityNet file {path} is unreadable or not a saved AffinityNet ({err}); "
            "delete it and rerun rule train_affinity"
        ) from err
    classifier = classifier_info = None
    if cfg.backbone == CLASSIFIER:
        from wsss_core.classifier.model import build_classifier

        model_config = dict(payload["backbone_config"])
        classifier = build_classifier({**model_config, "pretrained": False})
        classifier_info = {"model_config": model_config, "mean": payload["mean"],
                           "std": payload["std"]}  # fmt: skip
    net, _ = build_affinity_net(cfg, classifier, classifier_info)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"AffinityNet file {path} does not fit the net its config describes ({err}); "
            "delete it and rerun rule train_affinity"
        ) from err
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    return net.to(device).eval(), info


@torch.no_grad()
def image_features(
    net: AffinityNet, image: np.ndarray, info: Mapping[str, Any], device: torch.device | str
) -> torch.Tensor:
    """Features [D, h, w] of one uint8 [H, W, 3] image, resized to the net's input size (the
    classifier's) when it has one, normalised as in training."""
    transform = eval_transform(info.get("input_size"), info["mean"], info["std"])
    tensor, _ = transform(image_to_tensor(image), None)
    return net(tensor.unsqueeze(0).to(device))[0]
