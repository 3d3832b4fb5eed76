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
    images: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float], device
) -> torch.Tensor:
    """uint8 [H, W, 3] images of one size -> normalised float [B, 3, H, W] on ``device``."""
    for image in images:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        if image.shape != images[0].shape:
            raise ValueError(
                f"images of one batch differ in size: {images[0].shape}, {image.shape}"
            )
    pixels = torch.from_numpy(np.ascontiguousarray(np.stack(images)))
    x = pixels.to(device).permute(0, 3, 1, 2).float() / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32, device=device)[:, None, None]
    return (x - mean_t) / std_t


@torch.no_grad()
def predict_batch(
    model: nn.Module,
    images: Sequence[np.ndarray],
    mean: Sequence[float],
    std: Sequence[float],
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> np.ndarray:
    """Class probabilities float32 [B, C, H, W] of B RGB uint8 images of one size [H, W, 3]
    (model in eval mode), each as ``predict`` gives it: one forward pass per scale for the
    whole batch (and its mirror images)."""
    check_scales(scales)
    if len(images) == 0:
        raise ValueError("no images to predict")
    device = next(model.parameters()).device
    x = normalised(images, mean, std, device)
    batch = x.shape[0]
    height, width = images[0].shape[:2]
    total: torch.Tensor | None = None
    count = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        xs = x
        if size != (height, width):
            shrink = size[0] < height or size[1] < width
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        views = torch.cat([xs, xs.flip(-1)], dim=0) if flip else xs
        logits = model(views)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)
        summed = probs[:batch] + probs[batch:].flip(-1) if flip else probs
        total = summed if total is None else total + summed
        count += 2 if flip else 1
    return (total / count).float().cpu().numpy()


def predict(
    model: nn.Module,
    image: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> np.ndarray:
    """Class probabilities float32 [C, H, W] of one RGB uint8 image (model in eval mode)."""
    return predict_batch(model, [image], mean, std, scales, flip)[0]


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
