"""Multi-scale and flip inference of relevance maps, as WSSS practice does.

For every scale s the (already normalised) images are resized to s times their size,
rounded to a multiple of the model's total stride (patch size, times the CNN stem's
stride for hybrids) so that the token grid covers the image exactly; timm's dynamic image
size interpolates the position embedding. With ``flip`` the mirrored images are explained
too (in the same batch) and their maps mirrored back. Every map is resized bilinearly to
the grid of scale 1.0 and the maps are summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss_core.cams.relevance import explain, output_grid
from wsss_core.cams.trace import total_stride


def check_scales(scales: Sequence[float]) -> list[float]:
    """The scales as floats; an empty list or a scale <= 0 is an error."""
    values = [float(s) for s in scales]
    if not values or any(s <= 0 for s in values):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(scales)}")
    return values


def scaled_size(size: tuple[int, int], scale: float, stride: tuple[int, int]) -> tuple[int, int]:
    """``scale * size`` rounded (halves up) to a multiple of ``stride``, at least one stride."""
    return tuple(
        max(step, math.floor(n * scale / step + 0.5) * step)
        for n, step in zip(size, stride, strict=True)
    )


def resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of [B, C, H, W] (antialiased when shrinking); same size: unchanged."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of [K, h, w] maps (half-pixel centres); same size: unchanged."""
    if maps.shape[0] == 0:
        return maps.new_zeros((0,) + tuple(size))
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


def explain_multiscale(
    model: torch.nn.Module,
    images: Tensor,
    classes: Sequence[Sequence[int]],
    method: str = "transformer_attribution",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    start_layer: int = 1,
    *,
    variant: str = "chefer",
) -> list[Tensor]:
    """Sum over scales (and flips) of ``explain`` maps, on the grid of scale 1.0.

    ``images`` [B, 3, H, W] are the normalised inputs at scale 1.0. Returns per image a
    tensor [K_b, h, w] with (h, w) the grid ``explain`` gives for H x W. With scales (1.0,)
    and no flip this is exactly ``explain``.
    """
    scales = check_scales(scales)
    base = (int(images.shape[-2]), int(images.shape[-1]))
    target = output_grid(model, base, method)
    stride = total_stride(model)
    batch = images.shape[0]
    totals: list[Tensor | None] = [None] * batch
    for scale in scales:
        view = resize_images(images, scaled_size(base, scale, stride))
        views, view_classes = view, list(classes)
        if flip:
            views = torch.cat([view, view.flip(-1)], dim=0)
            view_classes = view_classes + view_classes
        maps = explain(model, views, view_classes, method, start_layer, variant=variant)
        for i, m in enumerate(maps):
            if i >= batch:
                m = m.flip(-1)
            m = resize_maps(m, target)
            b = i % batch
            totals[b] = m if totals[b] is None else totals[b] + m
    return list(totals)  # the first scale set every entry
