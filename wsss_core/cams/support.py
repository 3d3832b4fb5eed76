"""Which timm Vision Transformers the relevance methods can walk: the one check, made by the
classifier when it is built and by ``explain`` before it runs.

The relevance backward implements the rules of the reference ViT (``ViT_LRP`` of
hila-chefer/Transformer-Explainability): a CLS token read by one Linear head, and pre-norm
blocks of timm ``Attention`` and ``Mlp``. LayerNorm passes relevance unchanged there, and
so does every other element-wise module on the way, which lets the walk cover more of
timm's ViT family:

* layer scale (``init_values``: DeiT-3, DINOv2): an element-wise constant scale
  (``ls1``/``ls2``), passed unchanged like LayerNorm. With positive scales this is the
  same as folding the scale into ``attn.proj``/``mlp.fc2``, whose rule then gives the
  same relevance;
* register tokens (``reg_tokens``: ``*_reg4_dinov2``): extra tokens after the CLS token,
  kept through every roll-out and left out of the maps;
* ``no_embed_class`` (DeiT-3, the register models): the position embedding is added to the
  patch tokens only;
* a pre-norm (``norm_pre``, CLIP) and an fc-norm on the CLS token (``fc_norm``): LayerNorm
  or RMSNorm, passed unchanged;
* any element-wise activation in the MLP (GELU, QuickGELU, tanh-GELU, SiLU), passed
  unchanged like the reference's GELU.

Still refused, each with its reason in ``UnsupportedModelError.problems``:

* no CLS token or pooling other than it (``class_token=False``: the ``*_gap_*``, SigLIP and
  AIMv2 families; attention pooling ``global_pool='map'``): every map is the CLS token's row
  of a roll-out over the blocks, and the classifier's head must read that token. Models
  that have a CLS token but pool otherwise by default are built with
  ``global_pool='token'`` by the classifier (``wsss_core.classifier.model``);
* blocks other than a pre-norm ``Block`` of ``Attention`` and ``Mlp`` (gated or GLU MLPs
  such as SwiGLU, parallel, post-norm or differential-attention blocks): the reference
  has relevance rules for that block only;
* a normalisation inside attention or MLP (qk-norm, the scale-norms ``attn.norm`` /
  ``mlp.norm``): between a product and the next product's relevance rule, where the
  reference has none and no equivalence here checks one;
* patch embeddings other than a Conv2d ``PatchEmbed`` or a ``HybridEmbed`` CNN stem, heads
  other than one Linear layer, and parameters other than float32/float64.
"""

from __future__ import annotations

import torch
from timm.layers import HybridEmbed, LayerScale, Mlp, PatchEmbed, RmsNorm
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

# normalisations that the relevance passes unchanged where the walk meets them
PASS_NORMS = (nn.Identity, nn.LayerNorm, RmsNorm)


class UnsupportedModelError(ValueError):
    """A model the relevance methods cannot walk; ``problems`` says why, one entry a reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("model not supported by the relevance methods: " + "; ".join(problems))


def _identity(*modules: nn.Module) -> bool:
    return all(isinstance(m, nn.Identity) for m in modules)


def _block_problem(i: int, blk: nn.Module) -> str | None:
    attn, mlp = getattr(blk, "attn", None), getattr(blk, "mlp", None)
    if type(blk) is not Block or type(attn) is not Attention or type(mlp) is not Mlp:
        return (
            f"block {i} is not a pre-norm timm Block of Attention and Mlp (gated/GLU MLPs, "
            "parallel, post-norm or differential-attention blocks have no reference rule)"
        )
    if any(not isinstance(ls, nn.Identity | LayerScale) for ls in (blk.ls1, blk.ls2)):
        return f"block {i} has a residual scale other than timm's LayerScale"
    if not _identity(attn.q_norm, attn.k_norm, attn.norm, mlp.norm):
        return (
            f"block {i} has a qk-norm or a scale-norm inside attention or MLP (no reference "
            "rule for a normalisation between two products)"
        )
    if attn.gate is not None or not isinstance(mlp.fc1, nn.Linear):
        return f"block {i} has a gated attention or a convolutional MLP"
    return None


def check_supported(model: nn.Module) -> None:
    """Raise UnsupportedModelError unless ``model`` is a ViT layout the relevance backward knows."""
    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(
            [f"relevance maps need a timm VisionTransformer, got {type(model)}"]
        )
    problems = []
    if model.cls_token is None:
        problems.append(
            "the model has no CLS token (class_token=False), whose attention row every map is"
        )
    elif model.global_pool != "token" or model.attn_pool is not None:
        problems.append(
            f"the prediction must come from the CLS token: global_pool='token', not "
            f"'{model.global_pool}' (build the model with global_pool='token')"
        )
    for name in ("norm_pre", "fc_norm", "norm"):
        if not isinstance(getattr(model, name), PASS_NORMS):
            problems.append(f"{name} must be a LayerNorm or RMSNorm")
    if not isinstance(model.head, nn.Linear):
        problems.append("the head must be one Linear layer")
    if not isinstance(model.patch_embed, PatchEmbed | HybridEmbed):
        problems.append(f"unknown patch embedding {type(model.patch_embed).__name__}")
    elif isinstance(model.patch_embed, PatchEmbed) and (
        not isinstance(model.patch_embed.proj, nn.Conv2d)
        or not isinstance(model.patch_embed.norm, PASS_NORMS)
    ):
        problems.append("the patch embedding must be a Conv2d (and a LayerNorm or none)")
    for i, blk in enumerate(model.blocks):
        problem = _block_problem(i, blk)
        if problem:
            problems.append(problem)
            break
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        problems.append(f"parameters must be float32 or float64, not {dtype}")
    if problems:
        raise UnsupportedModelError(problems)
