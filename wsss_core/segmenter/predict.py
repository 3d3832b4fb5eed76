"""Segmenter inference: softmax averaged over scales and horizontal flips, optional dense CRF.

For every scale s the image is resized to round(s*H) x round(s*W), the logits are
resized back to H x W and turned into probabilities; with ``flip`` the mirrored
image is predicted too and its probabilities mirrored back. The result is the mean
of all these probability maps. A dense CRF (``wsss_core.seeds.crf``) can refine them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss_core.cams.multiscale import check_scales
from wsss_core.data.layout import load_image
from wsss_core.data.palette import save_mask
from wsss_core.seeds.crf import CRFParams, dense_crf


def normalised(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float], device
) -> torch.Tensor:
    """uint8 [H, W, 3] -> normalised float [1, 3, H, W] on ``device``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float() / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32, device=device)[:, None, None]
    return ((x - mean_t) / std_t)[None]


@torch.no_grad()
def predict(
    model: nn.Module,
    image: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> np.ndarray:
    """Class probabilities float32 [C, H, W] of one RGB uint8 image (model in eval mode)."""
    check_scales(scales)
    device = next(model.parameters()).device
    x = normalised(image, mean, std, device)
    height, width = image.shape[:2]
    total: torch.Tensor | None = None
    count = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        xs = x
        if size != (height, width):
            shrink = size[0] < height or size[1] < width
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        views = [xs, xs.flip(-1)] if flip else [xs]
        logits = model(torch.cat(views, dim=0))
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)
        if flip:
            probs = torch.stack([probs[0], probs[1].flip(-1)])
        summed = probs.sum(dim=0)
        total = summed if total is None else total + summed
        count += probs.shape[0]
    return (total / count).float().cpu().numpy()


def predict_dataset(
    model: nn.Module,
    data_root: str | os.PathLike,
    ids: Sequence[str],
    out_dir: str | os.PathLike,
    mean: Sequence[float],
    std: Sequence[float],
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf_params: CRFParams | None = None,
    crf_out_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write ``<out_dir>/<id>.png`` (argmax label masks) and, given ``crf_out_dir``, the
    argmax of the CRF-refined probabilities (``crf_params``, PSA's defaults when None)
    as ``<crf_out_dir>/<id>.png``. ``progress`` is called with 1 after each image."""
    check_scales(scales)
    model.eval()
    for image_id in ids:
        image = load_image(data_root, image_id)
        probs = predict(model, image, mean, std, scales, flip)
        save_mask(Path(out_dir) / f"{image_id}.png", probs.argmax(axis=0).astype(np.uint8))
        if crf_out_dir is not None:
            refined = dense_crf(image, probs, crf_params or CRFParams())
            save_mask(
                Path(crf_out_dir) / f"{image_id}.png", refined.argmax(axis=0).astype(np.uint8)
            )
        if progress is not None:
            progress(1)
