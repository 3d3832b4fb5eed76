"""The multi-label ViT classifier: build it from the config, load weights, save and reload it.

Every model is a stock timm ``VisionTransformer`` with CLS-token pooling (no registers,
layer scale, qk-norm or fc-norm: ``wsss_core.cams.support.check_supported``, made when the
model is built), so that the relevance code can walk its modules
(``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks[i].norm1/attn.qkv/attn.proj/
norm2/mlp.fc1/mlp.fc2``, ``norm``, ``head``). Backbones are timm model names
(``vit_base_patch16_224``, ``vit_small_patch16_224``, the R50 hybrid
``vit_base_r50_s16_384``...) or the demo hybrid ``hybrid_tiny``: a 3-stage conv stem of
stride 8, two convolutions a stage (``wsss_core.classifier.stem``), wrapped by timm's
``HybridEmbed``, then 2 blocks 128 wide with 2 heads: on a few CPU minutes from scratch the
convolutions learn more per second than transformer blocks (README, The demo).

Config keys read here (the ``classifier`` section): ``backbone``, ``num_classes``,
``img_size``, ``patch_size`` (plain ViTs only; hybrids ignore it), ``pretrained``
(``false`` | ``"hub"`` | path to a .pth/.pt/.bin/.safetensors/.npz file),
``dynamic_img_size``, ``drop_path_rate`` and optional ``mean``/``std`` overriding the input
normalisation. A key missing from ``cfg`` takes the config schema's default.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import HybridEmbed
from timm.models import get_pretrained_cfg, model_entrypoint
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from wsss_core.cams.support import UnsupportedModelError, check_supported
from wsss_core.classifier.stem import ConvStem
from wsss_core.config import schema_default
from wsss_core.io import save_torch

log = logging.getLogger(__name__)

HYBRID_TINY = "hybrid_tiny"
HYBRID_TINY_ARCH = {
    "stem_channels": (32, 64, 128),
    "stem_extra_convs": 1,
    "embed_dim": 128,
    "depth": 2,
    "num_heads": 2,
}
HEAD_KEYS = ("head.weight", "head.bias")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz")


class ClassifierConfigError(ValueError):
    """A classifier config key is missing or has a wrong value."""


# --------------------------------------------------------------------------------------
# Config


def _require(cfg: dict, key: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ClassifierConfigError(f"classifier config needs key '{key}' (see config.yaml)")
    return cfg[key]


def _get(cfg: dict, key: str) -> Any:
    """``cfg[key]``, or the config schema's default of ``classifier.<key>``."""
    return cfg[key] if key in cfg else schema_default(f"classifier.{key}")


def _positive_int(cfg: dict, key: str) -> int:
    value = _require(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClassifierConfigError(f"classifier.{key} must be a positive integer, got {value!r}")
    return value


def pretrained_source(cfg: dict) -> str | Path | None:
    """``None`` (random init), ``"hub"`` or the Path of a local weights file."""
    value = _get(cfg, "pretrained")
    if value is False or value is None:
        return None
    if value == "hub":
        return "hub"
    if value is True:
        raise ClassifierConfigError(
            'classifier.pretrained must be false, "hub" or a path to a weights file; '
            'true is ambiguous (write "hub" to download timm\'s weights)'
        )
    if not isinstance(value, str | os.PathLike):
        raise ClassifierConfigError(
            f'classifier.pretrained must be false, "hub" or a path, got {value!r}'
        )
    path = Path(value)
    if not path.is_file():
        raise ClassifierConfigError(
            f"classifier.pretrained: weights file {path} does not exist; download it there "
            "(or set pretrained: hub on a machine with internet access)"
        )
    if not str(path).endswith(WEIGHT_SUFFIXES):
        raise ClassifierConfigError(
            f"classifier.pretrained: {path} is not a weights file timm reads "
            f"({', '.join(WEIGHT_SUFFIXES)})"
        )
    return path


def is_hybrid_backbone(backbone: str) -> bool:
    """True for CNN+ViT hybrids (our ``hybrid_tiny`` and timm's ``vit_*_r*`` family)."""
    if backbone == HYBRID_TINY:
        return True
    return model_entrypoint(backbone).__module__.endswith("vision_transformer_hybrid")


def _check_backbone_name(backbone: Any) -> str:
    if not isinstance(backbone, str):
        raise ClassifierConfigError(f"classifier.backbone must be a model name, got {backbone!r}")
    if backbone != HYBRID_TINY and not timm.is_model(backbone):
        raise ClassifierConfigError(
            f"classifier.backbone '{backbone}' is neither '{HYBRID_TINY}' nor a timm model name "
            "(e.g. vit_base_patch16_224, vit_small_patch16_224, vit_base_r50_s16_384)"
        )
    return backbone


def normalization(cfg: dict) -> tuple[list[float], list[float]]:
    """Input (mean, std): config override, else timm's pretrained config for pretrained
    timm backbones, else the ImageNet statistics."""
    if cfg.get("mean") is not None or cfg.get("std") is not None:
        mean, std = cfg.get("mean"), cfg.get("std")
        for key, value in (("mean", mean), ("std", std)):
            if not isinstance(value, list | tuple) or len(value) != 3:
                raise ClassifierConfigError(
                    f"classifier.{key} must be a list of 3 numbers when mean/std are set, "
                    f"got {value!r}"
                )
        if any(s <= 0 for s in std):
            raise ClassifierConfigError(f"classifier.std must be positive, got {std!r}")
        return [float(m) for m in mean], [float(s) for s in std]
    backbone = cfg.get("backbone")
    if cfg.get("pretrained") not in (False, None) and backbone != HYBRID_TINY:
        pretrained_cfg = get_pretrained_cfg(backbone)
        if pretrained_cfg is not None:
            return [float(m) for m in pretrained_cfg.mean], [float(s) for s in pretrained_cfg.std]
    return list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)


# --------------------------------------------------------------------------------------
# Building


def build_hybrid_tiny(
    num_classes: int, img_size: int, dynamic_img_size: bool, drop_path_rate: float
) -> VisionTransformer:
    """The demo hybrid: ConvStem (stride 8, two convs a stage) -> HybridEmbed (1x1) -> 2 ViT
    blocks 128 wide."""
    stem = ConvStem(
        HYBRID_TINY_ARCH["stem_channels"], extra_convs=HYBRID_TINY_ARCH["stem_extra_convs"]
    )
    if img_size % stem.stride:
        raise ClassifierConfigError(
            f"classifier.img_size must be a multiple of {stem.stride} for {HYBRID_TINY}, "
            f"got {img_size}"
        )
    return VisionTransformer(
        img_size=img_size,
        patch_size=1,
        num_classes=num_classes,
        global_pool="token",
        class_token=True,
        embed_dim=HYBRID_TINY_ARCH["embed_dim"],
        depth=HYBRID_TINY_ARCH["depth"],
        num_heads=HYBRID_TINY_ARCH["num_heads"],
        dynamic_img_size=dynamic_img_size,
        drop_path_rate=drop_path_rate,
        embed_layer=partial(HybridEmbed, backbone=stem),
    )


def _timm_kwargs(cfg: dict, backbone: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "num_classes": _positive_int(cfg, "num_classes"),
        "img_size": _positive_int(cfg, "img_size"),
        "dynamic_img_size": bool(_get(cfg, "dynamic_img_size")),
        "drop_path_rate": float(_get(cfg, "drop_path_rate")),
    }
    if cfg.get("patch_size") is not None:
        if is_hybrid_backbone(backbone):
            log.debug("classifier.patch_size is ignored for the hybrid backbone %s", backbone)
        else:
            kwargs["patch_size"] = _positive_int(cfg, "patch_size")
    return kwargs


def patch_size(cfg: dict) -> int | None:
    """The side of the square patches a plain ViT cuts its input into: ``patch_size`` when
    set, else the timm model's own (built on the meta device: no memory, no download).
    None for hybrids, whose CNN stem makes the tokens (and which ignore ``patch_size``)."""
    backbone = _check_backbone_name(_require(cfg, "backbone"))
    if is_hybrid_backbone(backbone):
        return None
    if cfg.get("patch_size") is not None:
        return _positive_int(cfg, "patch_size")
    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False, num_classes=1)
    return int(model.patch_embed.patch_size[0])


def check_patch_multiple(cfg: dict, size: int, key: str = "classifier.img_size") -> None:
    """A plain ViT's input side ``size`` (config key ``key``) must be a multiple of its patch
    size: timm stops at the first forward pass otherwise. Hybrids pass."""
    patch = patch_size(cfg)
    if patch is None or size % patch == 0:
        return
    lower, upper = size // patch * patch, (size // patch + 1) * patch
    choices = f"{lower} or {upper}" if lower else str(upper)
    raise ClassifierConfigError(
        f"config key {key}: {size} is not a multiple of the patch size {patch} of "
        f"classifier.backbone {cfg['backbone']} (classifier.patch_size); use {choices}"
    )


def cls_pooling_kwargs(backbone: str) -> dict[str, Any]:
    """Extra ``timm.create_model`` arguments that make a timm ViT's head read the CLS token:
    none when it already does (or has no CLS token: the support check refuses it), else
    ``global_pool='token'`` and the model's own ``fc_norm`` setting, so that its pretrained
    weights (``fc_norm.*``, no ``norm.*``) still fit. Looked up on the meta device."""
    with torch.device("meta"):
        probe = timm.create_model(backbone, pretrained=False, num_classes=1)
    if not isinstance(probe, VisionTransformer) or probe.cls_token is None:
        return {}
    if probe.global_pool == "token" and probe.attn_pool is None:
        return {}
    return {"global_pool": "token", "fc_norm": not isinstance(probe.fc_norm, torch.nn.Identity)}


def build_classifier(cfg: dict) -> VisionTransformer:
    """Build the classifier described by ``cfg`` with a fresh ``num_classes`` head.

    ``pretrained`` false: random init; ``"hub"``: timm downloads its weights; a path:
    the backbone weights are read from that file (head dropped, position embedding and
    patch embedding resampled to the configured sizes as timm does).
    """
    backbone = _check_backbone_name(_require(cfg, "backbone"))
    source = pretrained_source(cfg)
    kwargs = _timm_kwargs(cfg, backbone)
    if backbone == HYBRID_TINY:
        if source == "hub":
            raise ClassifierConfigError(
                f"classifier.pretrained: there are no hub weights for '{HYBRID_TINY}'; "
                "use false or a weights file"
            )
        model = build_hybrid_tiny(
            kwargs["num_classes"],
            kwargs["img_size"],
            kwargs["dynamic_img_size"],
            kwargs["drop_path_rate"],
        )
    else:
        check_patch_multiple(cfg, kwargs["img_size"])
        kwargs.update(cls_pooling_kwargs(backbone))
        model = timm.create_model(backbone, pretrained=source == "hub", **kwargs)
    try:
        check_supported(model)
    except UnsupportedModelError as err:
        raise ClassifierConfigError(
            f"classifier.backbone '{backbone}' is not supported by the relevance methods: "
            f"{'; '.join(err.problems)}. Use a plain ViT (vit_*_patch*), DeiT-3 (deit3_*), "
            f"DINOv2 (vit_*_dinov2, vit_*_reg4_dinov2), a CLIP tower (vit_*_clip_*), a "
            f"ResNet hybrid (vit_*_r50_*) or {HYBRID_TINY}"
        ) from err
    if isinstance(source, Path):
        load_backbone_weights(model, source)
    return model


# --------------------------------------------------------------------------------------
# Weights files


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = timm.models.load_state_dict(str(path), device="cpu")
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many kinds
        raise ValueError(
            f"cannot read weights file {path} ({err}); re-download it or point "
            "classifier.pretrained to a valid .pth/.safetensors file"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_backbone_weights(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Load every weight except the head from ``path``; the model keeps its fresh head.

    Position and patch embeddings of another size are resampled (timm's
    ``checkpoint_filter_fn``). Keys that do not fit the model stop with a message
    naming the file.
    """
    path = Path(path)
    fresh_head = {k: v.clone() for k, v in model.head.state_dict().items()}
    if path.suffix == ".npz":
        if isinstance(model.patch_embed, HybridEmbed) and not hasattr(
            model.patch_embed.backbone, "stem"
        ):
            raise ValueError(f"{path}: .npz (JAX) weights exist only for timm backbones")
        try:
            model.load_pretrained(str(path))
        except Exception as err:  # noqa: BLE001
            raise ValueError(
                f"cannot load JAX weights {path} into this backbone ({err}); check that the "
                "file matches classifier.backbone"
            ) from err
    else:
        state = checkpoint_filter_fn(_read_state_dict(path), model)
        state = {k: v for k, v in state.items() if k not in HEAD_KEYS}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise ValueError(
                f"weights file {path} does not fit the configured backbone ({err}); check "
                "classifier.backbone / patch_size against the file"
            ) from err
        missing = [k for k in missing if k not in HEAD_KEYS]
        if missing or unexpected:
            raise ValueError(
                f"weights file {path} does not fit the configured backbone: missing "
                f"{missing[:5]}, unexpected {list(unexpected)[:5]}; check classifier.backbone"
            )
    model.head.load_state_dict(fresh_head)
    log.info("loaded backbone weights from %s (new %d-class head)", path, model.num_classes)


# --------------------------------------------------------------------------------------
# Saving and loading a trained classifier


def save_classifier(
    path: str | os.PathLike, model: VisionTransformer, cfg: dict, class_names: list[str]
) -> None:
    """Write config, class names, weights and input normalisation to ``path`` atomically."""
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class model")
    mean, std = normalization(cfg)
    payload = {
        "model_config": dict(cfg),
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "mean": mean,
        "std": std,
    }
    save_torch(path, payload)


def load_classifier(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[VisionTransformer, dict[str, Any]]:
    """Rebuild a saved classifier (never downloading) -> (model in eval mode on ``device``,
    info with ``model_config``, ``class_names``, ``mean``, ``std``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier {path} does not exist; run the classifier rule first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        cfg = dict(payload["model_config"])
        state = payload["state_dict"]
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"classifier file {path} is unreadable or not a saved classifier ({err}); "
            "delete it and rerun the classifier rule"
        ) from err
    cfg["pretrained"] = False
    model = build_classifier(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"classifier file {path} does not fit the model its config describes ({err}); "
            "delete it and rerun the classifier rule"
        ) from err
    info = {k: payload[k] for k in ("model_config", "class_names", "mean", "std")}
    return model.to(device).eval(), info
