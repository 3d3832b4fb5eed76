"""Class-specific relevance maps of a timm VisionTransformer (Chefer, Gur & Wolf, CVPR 2021).

``explain(model, images, classes, method)`` walks a stock timm ``VisionTransformer`` (plain
patch embedding or a ``HybridEmbed`` CNN stem) with its own forward pass that records
what every layer saw (``wsss_core.cams.trace``), then computes the maps of ``method``
(``wsss_core.cams.methods``: the registry, and each method's equivalent in the reference
code). The model is left untouched: no module is replaced, no parameter or buffer changes,
and its train/eval flags are restored afterwards (the computation itself always runs in
eval mode). Which models are walked is ``wsss_core.cams.support.check_supported``.

All LRP methods start from the one-hot vector of the class on the logits (not the logit
value) and use the ``layers_ours`` rules by default (``variant="chefer"``);
``variant="original"`` selects the ``layers_lrp`` rules with which the paper's evaluation
computed its ``full_lrp`` and ``lrp_last_layer`` baselines (``ViT_orig_LRP``).

Every result is the raw, un-normalised relevance of the patch tokens as [K, h, w] on the
token grid, except ``full_lrp`` on a plain patch embedding, which reaches the pixels:
[K, H, W]. For a hybrid (CNN stem) ``full_lrp`` stops at the stem's output grid, i.e. the
token grid (relevance of the patch tokens after the position-embedding split, summed over
embedding channels). Images with the same number of classes share one forward pass and one
relevance walk (``explain`` groups them), so that every class slot of the batched walk is
used. What is rejected, and why, is ``wsss_core.cams.support``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from wsss_core.cams.methods import method_named
from wsss_core.cams.support import check_supported
from wsss_core.cams.trace import forward_trace, is_hybrid, make_pairs, token_grid


def output_grid(
    model: VisionTransformer, image_size: tuple[int, int], method: str
) -> tuple[int, int]:
    """The (h, w) of ``method``'s maps for an input of ``image_size``."""
    if method_named(method).reaches_pixels and not is_hybrid(model):
        return int(image_size[0]), int(image_size[1])
    return token_grid(model, image_size)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode, then restore every module's own train flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: under autocast only the forward pass (and so its backward) runs in the
    lower precision; the methods compute in the model's dtype."""
    return torch.autocast(device.type, enabled=False)


def explain(
    model: VisionTransformer,
    images: Tensor,
    classes: Sequence[Sequence[int]],
    method: str = "transformer_attribution",
    start_layer: int = 1,
    *,
    variant: str = "chefer",
) -> list[Tensor]:
    """Relevance maps of ``classes[b]`` for every image ``images[b]``.

    ``images``: normalised float [B, 3, H, W]; ``classes``: one list of class indices per
    image. Returns, per image, a tensor [K_b, h, w] (K_b = len(classes[b])) of raw,
    un-normalised relevance on the token grid, or on the pixel grid [K_b, H, W] for
    ``full_lrp`` with a plain patch embedding. ``start_layer`` (first block included)
    matters for ``transformer_attribution``, ``rollout`` and ``gae``; ``variant`` picks
    the LRP rules (``"chefer"``: layers_ours, ``"original"``: layers_lrp; see
    ``wsss_core.cams.lrp``). Computation runs in the model's dtype (float32 or float64) on
    its device; the maps are detached tensors there. Called under ``torch.autocast``, the
    forward pass and the attention gradients run in the autocast dtype (float16 gradients
    scaled against underflow), the relevance walk and the maps in the model's dtype.
    """
    spec = method_named(method)
    check_supported(model)
    depth = len(model.blocks)
    if not 0 <= start_layer < depth:
        raise ValueError(f"start_layer must be in [0, {depth}) for this model, got {start_layer}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if len(classes) != images.shape[0]:
        raise ValueError(f"{len(classes)} class lists for {images.shape[0]} images")
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype)
    pairs = make_pairs(classes, model.num_classes, param.device)
    grid = output_grid(model, tuple(images.shape[-2:]), method)
    if sum(pairs.counts) == 0:  # no image has a class to explain
        return [images.new_zeros((0,) + grid) for _ in classes]

    with _eval_mode(model):
        if spec.class_agnostic:  # one map per image, taken for each of its classes
            with torch.no_grad():
                trace = forward_trace(model, images)
                with _full_precision(param.device):
                    per_image = spec.compute(model, trace, pairs, start_layer, variant)
            maps = per_image.index_select(0, pairs.image)
            maps = maps.detach().reshape((maps.shape[0],) + grid)
            return list(maps.split(pairs.counts, dim=0))
        # Images with the same number of classes share one forward pass, so that the
        # per-pair work has the dense [images, classes, ...] layout (no empty slots).
        results: list[Tensor] = [images.new_zeros((0,) + grid) for _ in classes]
        grad_from = spec.gradients_from(start_layer, depth)
        for count in sorted(set(pairs.counts) - {0}):
            members = [b for b, c in enumerate(pairs.counts) if c == count]
            group = [classes[b] for b in members]
            batch = images if len(members) == len(classes) else images[members]
            group_pairs = make_pairs(group, model.num_classes, param.device)
            trace = forward_trace(model, batch, grad_from)
            with _full_precision(param.device):
                maps = spec.compute(model, trace, group_pairs, start_layer, variant)
            del trace
            maps = maps.detach().reshape((len(members), count) + grid)
            for b, m in zip(members, maps, strict=True):
                results[b] = m
    return results
