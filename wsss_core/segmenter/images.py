"""Masks for new images: a finished run's segmenter on image files (``wsss predict``).

``plan_predict`` finds the segmenter (a run folder's ``segmenter/<method>/segmenter.pt`` or a
file), the images, and the inference settings (options, else those the run recorded, else the
config defaults: ``wsss_core.runs``), and loads the models; ``predict_images`` then predicts
the images in batches of one size with ``predict_batch`` (the workflow's prediction, the same
probabilities as ``predict`` and ``predict_dataset``) and writes per image

- ``<stem>.png``: the label mask, a palette PNG with the VOC palette (as the workflow's
  ``predictions/<method>/seg/``),
- ``<stem>_overlay.png``: the mask's colours blended over the image,
- with relevance maps, ``<stem>_<class>.png`` for each class the mask holds: the classifier's
  relevance map of that class as a heat map over the image (``wsss_core.cams.images``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsss_core.cams.images import (
    classifier_inputs,
    file_label,
    load_explainer,
    relevance_maps,
    write_relevance,
)
from wsss_core.cams.multiscale import check_scales
from wsss_core.cli import UserError
from wsss_core.data.image_files import ImageFiles, batches_by_size, read_image
from wsss_core.data.palette import IGNORE_INDEX, save_mask
from wsss_core.io import save_image
from wsss_core.report.figures import mask_overlay
from wsss_core.runs import (
    CLASSIFIER_FILE,
    cams_settings,
    inference_settings,
    saved_model_kind,
    segmenter_models,
)
from wsss_core.runtime import select_device
from wsss_core.segmenter.model import load_segmenter
from wsss_core.segmenter.predict import predict_batch

log = logging.getLogger(__name__)

RELEVANCE_METHOD = "transformer_attribution"
OVERLAY_SUFFIX = "_overlay"


@dataclass
class Explainer:
    """The classifier that explains the predicted classes, and its cams settings."""

    model: nn.Module
    info: dict
    size: int
    method: str
    scales: list[float]
    flip: bool
    start_layer: int


@dataclass
class PredictJob:
    """Everything ``predict_images`` needs, checked by ``plan_predict``."""

    model: nn.Module
    info: dict
    images: ImageFiles
    out_dir: Path
    scales: list[float]
    flip: bool
    batch_size: int
    explainer: Explainer | None


def _load_segmenter(path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    try:
        return load_segmenter(path, device)
    except ValueError as err:
        if saved_model_kind(path) == "classifier":
            raise UserError(
                f"{path} is a classifier, not a segmenter; give a run folder or a "
                "segmenter.pt (wsss explain makes relevance maps of a classifier)"
            ) from err
        raise


def _explainer(
    models, segmenter_info: dict, device: torch.device, method: str, segmenter: Path
) -> Explainer:
    if models.classifier is None:
        if models.run_dir is not None:
            why = f"{models.run_dir / CLASSIFIER_FILE} does not exist"
        else:
            why = "it is not in a run folder"
        raise UserError(
            f"no classifier for the relevance maps of {segmenter} ({why}); give one with "
            "--classifier, or leave out --relevance"
        )
    settings = cams_settings(models.run_dir, method)
    model, info, size = load_explainer(models.classifier, device)
    clash = [name for name in info["class_names"] if file_label(name) == OVERLAY_SUFFIX[1:]]
    if clash:
        raise UserError(
            f"the class '{clash[0]}' of {models.classifier} would name its relevance maps like "
            "the overlays (<stem>_overlay.png); leave out --relevance and use wsss explain"
        )
    if list(info["class_names"]) != list(segmenter_info["class_names"]):
        raise UserError(
            f"the classes of the classifier {models.classifier} ({', '.join(info['class_names'])})"
            f" differ from those of the segmenter {segmenter} "
            f"({', '.join(segmenter_info['class_names'])}); give the classifier of the same run"
        )
    return Explainer(
        model, info, size, method, settings["scales"], settings["flip"], settings["start_layer"]
    )


def plan_predict(
    run_or_model: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    method: str | None = None,
    classifier: str | os.PathLike | None = None,
    relevance: bool = False,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    device: str = "auto",
    batch_size: int = 4,
) -> PredictJob:
    """Find the models and the images, settle the settings, load the models; every problem
    is an error here, before any image is predicted."""
    models = segmenter_models(run_or_model, method, classifier)
    files = ImageFiles.collect(images, exclude=out_dir)
    settings = inference_settings(models.run_dir, models.method, scales, flip)
    check_scales(settings["scales"])
    target = select_device(device)
    model, info = _load_segmenter(models.segmenter, target)
    explainer = None
    if relevance:
        explainer = _explainer(models, info, target, RELEVANCE_METHOD, models.segmenter)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log.info(
        "predicting %d images with %s%s on %s into %s",
        len(files),
        models.segmenter,
        " and relevance maps" if explainer else "",
        target,
        out,
    )
    return PredictJob(
        model, info, files, out, settings["scales"], settings["flip"], batch_size, explainer
    )


def mask_classes(mask: np.ndarray) -> list[int]:
    """The classifier's class indices of the classes a label mask holds (label - 1)."""
    labels = np.unique(mask)
    return [int(label) - 1 for label in labels if label != 0 and label != IGNORE_INDEX]


def predict_images(job: PredictJob, progress: Callable[[int], None] | None = None) -> int:
    """Write every image's mask, overlay (and relevance maps); ``progress`` is called with the
    number of images after each batch. Returns the number of images."""
    for chunk in batches_by_size(job.images.sizes, job.batch_size):
        pictures = [read_image(job.images.paths[i]) for i in chunk]
        probs = predict_batch(
            job.model, pictures, job.info["mean"], job.info["std"], job.scales, job.flip
        )
        masks = probs.argmax(axis=1).astype(np.uint8)
        for i, picture, mask in zip(chunk, pictures, masks, strict=True):
            stem = job.images.stems[i]
            save_mask(job.out_dir / f"{stem}.png", mask)
            save_image(job.out_dir / f"{stem}{OVERLAY_SUFFIX}.png", mask_overlay(picture, mask))
        if job.explainer is not None:
            _write_relevance(job, chunk, pictures, masks)
        if progress is not None:
            progress(len(chunk))
    return len(job.images)


def _write_relevance(
    job: PredictJob, chunk: Sequence[int], pictures: list[np.ndarray], masks: np.ndarray
) -> None:
    ex = job.explainer
    device = next(ex.model.parameters()).device
    inputs = classifier_inputs(pictures, ex.size, ex.info["mean"], ex.info["std"], device)
    classes = [mask_classes(mask) for mask in masks]
    sizes = [picture.shape[:2] for picture in pictures]
    maps = relevance_maps(
        ex.model, inputs, classes, sizes, ex.method, ex.scales, ex.flip, ex.start_layer
    )
    names = list(ex.info["class_names"])
    for i, picture, cls, heat in zip(chunk, pictures, classes, maps, strict=True):
        write_relevance(job.out_dir, job.images.stems[i], picture, heat, cls, names)
