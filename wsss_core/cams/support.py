"""Which timm Vision Transformers the relevance methods can walk: the one check, made by the
classifier when it is built and by ``explain`` before it runs.

The relevance backward implements the rules of the reference ViT (``ViT_LRP`` of
hila-chefer/Transformer-Explainability): a CLS token read by one Linear head, a position
embedding added to the patch tokens, and pre-norm blocks of timm ``Attention`` and ``Mlp``
whose only normalisations are ``norm1``, ``norm2`` and the final ``norm`` (LayerNorms,
through which relevance passes unchanged, as in the reference). Anything else is refused:
layer scale, register tokens, pooling other than the CLS token, gated attention or a
convolutional MLP, and the normalisations the reference has no rule for (pre-norm, fc-norm,
qk-norm, the scale-norms inside attention and MLP). Parameters must be float32 or float64.
"""

from __future__ import annotations

import torch
from timm.layers import HybridEmbed, Mlp, PatchEmbed
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn


class UnsupportedModelError(ValueError):
    """A model the relevance methods cannot walk; ``problems`` says why, one entry a reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("model not supported by the relevance methods: " + "; ".join(problems))


def _identity(*modules: nn.Module) -> bool:
    return all(isinstance(m, nn.Identity) for m in modules)


def check_supported(model: nn.Module) -> None:
    """Raise UnsupportedModelError unless ``model`` is a ViT layout the relevance backward knows."""
    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(
            [f"relevance maps need a timm VisionTransformer, got {type(model)}"]
        )
    problems = []
    if model.cls_token is None or model.global_pool != "token" or model.attn_pool is not None:
        problems.append("the prediction must come from the CLS token (global_pool='token')")
    if model.num_reg_tokens or model.no_embed_class or model.pos_embed is None:
        problems.append("register tokens, no_embed_class or a missing position embedding")
    if not _identity(model.norm_pre, model.fc_norm):
        problems.append("a pre-norm or fc-norm (the reference has no rule for them)")
    if not isinstance(model.head, nn.Linear):
        problems.append("the head must be one Linear layer")
    if not isinstance(model.patch_embed, PatchEmbed | HybridEmbed):
        problems.append(f"unknown patch embedding {type(model.patch_embed).__name__}")
    elif isinstance(model.patch_embed, PatchEmbed) and not isinstance(
        model.patch_embed.proj, nn.Conv2d
    ):
        problems.append("the patch embedding must be a Conv2d")
    for i, blk in enumerate(model.blocks):
        attn, mlp = getattr(blk, "attn", None), getattr(blk, "mlp", None)
        if type(blk) is not Block or type(attn) is not Attention or type(mlp) is not Mlp:
            problems.append(f"block {i} is not a pre-norm timm Block with Attention and Mlp")
        elif not _identity(blk.ls1, blk.ls2):
            problems.append(f"block {i} has layer scale")
        elif not _identity(attn.q_norm, attn.k_norm, attn.norm, mlp.norm):
            problems.append(f"block {i} has a qk-norm or a scale-norm in attention or MLP")
        elif attn.gate is not None or not isinstance(mlp.fc1, nn.Linear):
            problems.append(f"block {i} has a gated attention or a convolutional MLP")
        if problems:
            break
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        problems.append(f"parameters must be float32 or float64, not {dtype}")
    if problems:
        raise UnsupportedModelError(problems)
