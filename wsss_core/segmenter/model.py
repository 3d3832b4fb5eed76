"""The segmenter's two architectures, chosen by ``segmenter.net.backbone``.

**DeepLabV3+** (Chen et al., ECCV 2018) on a timm ``features_only`` CNN. The backbone gives
two feature maps: the stride-4 stage (low-level features for the
decoder) and the last stage at the configured output stride (8 or 16, by dilation).
ASPP (a 1x1 branch, three atrous 3x3 branches and image pooling) runs on the last
stage; the decoder concatenates it, upsampled, with the reduced low-level features,
refines with two 3x3 convolutions and classifies; the logits are upsampled
bilinearly to the input size, so any input size works (not only multiples of 16).

**A light decoder on the fine-tuned classifier** (``backbone: classifier``), as ViT-based WSSS
segmenters do: without ImageNet weights the classifier's are the only trained features a run
owns. The patch tokens of ``vit_blocks`` and the conv ``taps`` (``ViTLevels``) are each
reduced by a 1x1 conv-BN-ReLU, brought to the stride-4 grid, concatenated, refined by two
3x3 conv-BN-ReLU and classified; inputs are padded to a multiple of the token stride.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import load_state_dict
from torch import nn

from wsss_core.classifier.levels import ViTLevels
from wsss_core.config import schema_field
from wsss_core.data.palette import IGNORE_INDEX

CLASSIFIER = "classifier"  # segmenter.net.backbone: the fine-tuned classifier's features
DECODER_STRIDE = 4  # the classifier decoder's grid: input size / 4


@dataclass
class SegmenterConfig:
    """Architecture of the segmenter (the ``segmenter.net`` config keys that shape the model).

    ``aspp_rates`` are the atrous rates at output stride 16 (DeepLab's 6, 12, 18); at
    output stride 8 they are doubled so that they cover the same image extent.
    ``pretrained``: false (random init), "hub" (timm's weights, needs network) or the
    path of a state-dict file of the timm backbone (classifier keys are ignored).
    ``vit_blocks`` and ``taps`` are the levels of the classifier backbone, whose
    ``classifier_config`` (the classifier's model_config) comes from the classifier file.
    The defaults are the config schema's.
    """

    backbone: str = schema_field("segmenter.net.backbone")
    vit_blocks: list[int] = schema_field("segmenter.net.vit_blocks")
    taps: list[str] = schema_field("segmenter.net.taps")
    pretrained: bool | str = schema_field("segmenter.net.pretrained")
    output_stride: int = schema_field("segmenter.net.output_stride")
    aspp_rates: list[int] = schema_field("segmenter.net.aspp_rates")
    aspp_channels: int = schema_field("segmenter.net.aspp_channels")
    low_level_channels: int = schema_field("segmenter.net.low_level_channels")
    decoder_channels: int = schema_field("segmenter.net.decoder_channels")
    dropout: float = schema_field("segmenter.net.dropout")
    num_classes: int = 21  # not a config key: background + the dataset's classes
    classifier_config: dict[str, Any] | None = None  # not a config key: see above

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmenterConfig:
        """Build from a config mapping; keys of other kinds (training keys) are skipped."""
        names = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.output_stride not in (8, 16):
            raise ValueError(
                f"config key segmenter.net.output_stride must be 8 or 16, got {self.output_stride}"
            )
        if len(self.aspp_rates) != 3 or any(int(r) < 1 for r in self.aspp_rates):
            raise ValueError(
                "config key segmenter.net.aspp_rates must be three positive integers "
                f"(rates at output stride 16), got {self.aspp_rates}"
            )
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes must be >= 2 (background + classes), got {self.num_classes}"
            )
        if self.backbone == CLASSIFIER and not (self.vit_blocks or self.taps):
            raise ValueError(
                "config keys segmenter.net.vit_blocks and segmenter.net.taps are both empty; "
                "the classifier backbone needs at least one level (e.g. vit_blocks: [-1])"
            )
        if (
            self.backbone == CLASSIFIER
            and self.classifier_config
            and self.classifier_config.get("dynamic_img_size") is False
        ):
            raise ValueError(
                "segmenter.net.backbone classifier segments images of any size, but the classifier "
                "was trained with classifier.dynamic_img_size false; set it to true and rerun"
            )
        if not (self.pretrained in (False, True, "hub") or isinstance(self.pretrained, str)):
            raise ValueError(
                "config key segmenter.net.pretrained must be false, 'hub' or a path to a "
                f"backbone state-dict file, got {self.pretrained!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled_rates(self) -> list[int]:
        """Atrous rates at the configured output stride."""
        return [int(r) * 16 // self.output_stride for r in self.aspp_rates]


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Module):
    """Image-level features: global average pool, 1x1 conv, broadcast back to the map size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = _conv_bn_relu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.proj(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3 and image pooling, fused by 1x1."""

    def __init__(self, cin: int, cout: int, rates: list[int], dropout: float) -> None:
        super().__init__()
        branches = [_conv_bn_relu(cin, cout, 1)]
        branches += [_conv_bn_relu(cin, cout, 3, dilation=r) for r in rates]
        branches.append(ASPPPooling(cin, cout))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            _conv_bn_relu(cout * len(branches), cout, 1), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class Segmenter(nn.Module):
    """What both architectures share: ``cfg``, a ``backbone`` and the head around it.

    ``freeze_backbone`` stops the backbone's gradients and keeps it in eval mode (frozen
    batch-norm statistics, no dropout) also while the head trains.
    """

    cfg: SegmenterConfig
    backbone: nn.Module
    backbone_frozen: bool = False

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the backbone."""
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone_ids]

    def freeze_backbone(self) -> None:
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True) -> Segmenter:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self


class DeepLabV3Plus(Segmenter):
    """Backbone -> ASPP -> decoder with stride-4 low-level features -> logits at input size."""

    def __init__(self, cfg: SegmenterConfig, backbone: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        reductions = backbone.feature_info.reduction()
        channels = backbone.feature_info.channels()
        if 4 not in reductions:
            raise ValueError(
                f"backbone {cfg.backbone} has no stride-4 stage (strides {reductions})"
            )
        self.low_index = reductions.index(4)
        self.high_index = len(reductions) - 1
        self.aspp = ASPP(channels[-1], cfg.aspp_channels, cfg.scaled_rates(), cfg.dropout)
        self.low_proj = _conv_bn_relu(channels[self.low_index], cfg.low_level_channels, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(cfg.aspp_channels + cfg.low_level_channels, cfg.decoder_channels, 3),
            _conv_bn_relu(cfg.decoder_channels, cfg.decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(cfg.decoder_channels, cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        low, high = feats[self.low_index], feats[self.high_index]
        context = self.aspp(high)
        context = F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False)
        fused = self.decoder(torch.cat([context, self.low_proj(low)], dim=1))
        logits = self.classifier(fused)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ClassifierSegmenter(Segmenter):
    """Classifier levels -> 1x1 conv-BN-ReLU each -> stride-4 grid -> concat -> two 3x3
    conv-BN-ReLU -> 1x1 classifier -> logits at the input size."""

    def __init__(self, cfg: SegmenterConfig, vit: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ViTLevels(vit, cfg.vit_blocks, cfg.taps, "segmenter.net")
        size = int(cfg.classifier_config["img_size"]) if cfg.classifier_config else 224
        was_training = vit.training
        vit.eval()  # a probe of one blank image: no batch statistics
        with torch.no_grad():
            probes = self.backbone(torch.zeros(1, 3, size, size))
        vit.train(was_training)
        # inputs are padded to a multiple of the coarsest level's stride (the token stride)
        self.stride = max(1, size // min(int(p.shape[-1]) for p in probes))
        width = cfg.decoder_channels
        self.project = nn.ModuleList(_conv_bn_relu(int(p.shape[1]), width, 1) for p in probes)
        self.decoder = nn.Sequential(
            _conv_bn_relu(width * len(probes), width, 3), _conv_bn_relu(width, width, 3)
        )
        self.classifier = nn.Conv2d(width, cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # right/bottom padding with 0, the mean colour after normalisation (as training's PadTo)
        padded = F.pad(x, (0, -width % self.stride, 0, -height % self.stride))
        grid = tuple(math.ceil(side / DECODER_STRIDE) for side in padded.shape[-2:])
        maps = []
        for project, level in zip(self.project, self.backbone(padded), strict=True):
            level = project(level)
            if tuple(level.shape[-2:]) != grid:
                level = F.interpolate(level, size=grid, mode="bilinear", align_corners=False)
            maps.append(level)
        logits = self.classifier(self.decoder(torch.cat(maps, dim=1)))
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]


def _load_backbone_file(backbone: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load a timm backbone state dict; every backbone weight must be in the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config key segmenter.net.pretrained names {path}, which does not exist; "
            "give the path of a state-dict file of the timm backbone, 'hub', or false"
        )
    state = load_state_dict(str(path))  # .pth/.pt/.bin or .safetensors; unwraps "state_dict"
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or mismatched:
        raise ValueError(
            f"{path} is not a state dict of timm '{name}': {len(missing)} backbone weights are "
            f"missing and {len(mismatched)} have other shapes (e.g. {(missing + mismatched)[:3]}); "
            f"save timm.create_model('{name}').state_dict() or set segmenter.net.pretrained "
            "to false"
        )
    backbone.load_state_dict({k: state[k] for k in own})


def build_backbone(cfg: SegmenterConfig) -> nn.Module:
    """The timm backbone with every stage's features, dilated to the output stride."""
    try:
        backbone = timm.create_model(
            cfg.backbone,
            pretrained=cfg.pretrained in (True, "hub"),
            features_only=True,
            output_stride=cfg.output_stride,
        )
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"config key segmenter.net.backbone: timm cannot build '{cfg.backbone}' as a "
            f"features_only backbone ({err}); pick a CNN such as resnet101 or resnet18"
        ) from err
    if isinstance(cfg.pretrained, str) and cfg.pretrained != "hub":
        _load_backbone_file(backbone, cfg.pretrained, cfg.backbone)
    return backbone


def build_segmenter(
    cfg: SegmenterConfig | dict[str, Any], classifier: nn.Module | None = None
) -> Segmenter:
    """The segmenter of a config (a ``SegmenterConfig`` or a mapping of its keys).

    With ``backbone: classifier`` the decoder sits on ``classifier`` (the loaded, fine-tuned
    ViT) or, without it, on a freshly built one of ``classifier_config`` (to load weights into).
    """
    if not isinstance(cfg, SegmenterConfig):
        cfg = SegmenterConfig.from_dict(cfg)
    else:
        cfg.validate()
    if cfg.backbone != CLASSIFIER:
        return DeepLabV3Plus(cfg, build_backbone(cfg))
    if classifier is None:
        if cfg.classifier_config is None:
            raise ValueError(
                "segmenter.net.backbone classifier: the classifier's model_config is missing; "
                "train the segmenter with the run's classifier/model.pt"
            )
        from wsss_core.classifier.model import build_classifier

        classifier = build_classifier({**cfg.classifier_config, "pretrained": False})
    return ClassifierSegmenter(cfg, classifier)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labelled pixels (label 255 ignored).

    Unlike ``F.cross_entropy(..., reduction="mean")`` a batch whose pixels are all
    ignored gives 0 (and zero gradients), not NaN. Labels outside 0..C-1 (and not
    255) are an error: pseudo masks must hold background, the K classes or 255.
    """
    num_classes = logits.shape[1]
    bad = (target != IGNORE_INDEX) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise ValueError(
            f"mask label {value} is outside 0..{num_classes - 1} and not {IGNORE_INDEX}; "
            "the pseudo masks do not match the dataset's classes.txt"
        )
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (target != IGNORE_INDEX).sum().clamp(min=1)
    return total / count


def save_segmenter(path: str | os.PathLike, model: Segmenter, info: dict[str, Any]) -> None:
    """The trained model for inference: weights, architecture config, class names, mean/std."""
    from wsss_core.train.checkpoint import save_checkpoint

    cfg = model.cfg.to_dict()
    cfg["pretrained"] = False  # the weights are in the file; no hub or backbone file needed later
    save_checkpoint(path, {"state_dict": model.state_dict(), "model_config": cfg, **info})


def load_segmenter(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[Segmenter, dict[str, Any]]:
    """Load ``segmenter.pt`` -> (model in eval mode on ``device``, info).

    ``info`` holds ``model_config``, ``class_names``, ``mean``, ``std`` (and ``epochs``).
    """
    from wsss_core.train.checkpoint import load_checkpoint

    try:
        state = load_checkpoint(path)
    except Exception as err:  # noqa: BLE001 - an unreadable file, whatever torch raised
        cause = " ".join(str(err.__cause__ or err).split())[:200]
        raise ValueError(
            f"segmenter file {path} is unreadable ({cause}); delete it and rerun the "
            "train_segmenter rule"
        ) from err
    if state is None:
        raise FileNotFoundError(f"segmenter {path} does not exist; run the train_segmenter rule")
    for key in ("state_dict", "model_config", "class_names", "mean", "std"):
        if not isinstance(state, dict) or key not in state:
            raise ValueError(
                f"{path} lacks '{key}': it was not written by train_segmenter; delete it and "
                "rerun the train_segmenter rule"
            )
    model = build_segmenter(state["model_config"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise ValueError(
            f"segmenter file {path} does not fit the model its config describes ({err}); "
            "delete it and rerun the train_segmenter rule"
        ) from err
    model.to(device).eval()
    info = {k: v for k, v in state.items() if k != "state_dict"}
    return model, info
