"""Relevance maps of RGB images with a saved classifier: the rule extract_cams and ``wsss explain``.

Every image is resized to the classifier's square input size (scale 1.0; other scales relative
to it, ``wsss_core.cams.multiscale``) and normalised like its training inputs; a batch of
images is explained in one pass (``explain_multiscale``). For image files
(``plan_explain`` / ``explain_images``) the maps are resized to each image's size and scaled
to [0, 1] (``upsample_normalise``, as the seeds read them) and written per image and class as
``<stem>_<class>.png``, a heat map (jet colours) blended over the image, and optionally
``<stem>_<class>.npy`` (float32 [H, W] in [0, 1]); ``scores.csv`` holds every image's class
probabilities (sigmoid of the logits at scale 1.0). The classes explained are those the
classifier finds present (probability >= 0.5, the threshold of its F1 scores), all, or named.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from wsss_core.cams.methods import METHODS
from wsss_core.cams.multiscale import check_scales, explain_multiscale
from wsss_core.cams.store import upsample_normalise
from wsss_core.classifier.model import load_classifier
from wsss_core.cli import UserError
from wsss_core.data.image_files import ImageFiles, read_image
from wsss_core.data.transforms import eval_transform, image_to_tensor
from wsss_core.io import atomic_path, save_image, write_table
from wsss_core.report.figures import heat_overlay
from wsss_core.runs import cams_settings, classifier_model, saved_model_kind
from wsss_core.runtime import select_device

log = logging.getLogger(__name__)

PRESENT, ALL = "present", "all"
PRESENT_THRESHOLD = 0.5  # as the classifier's F1 scores (wsss_core.classifier.train)
SCORES_FILE = "scores.csv"


def input_size(info: dict, path: str | os.PathLike) -> int:
    """The classifier's square input size from its saved config."""
    size = info.get("model_config", {}).get("img_size")
    if isinstance(size, list | tuple):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"{path}: img_size {size} is not square")
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{path}: model_config has no valid img_size ({size!r}); retrain it")
    return size


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    """``items`` in consecutive chunks of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def classifier_inputs(
    images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float], device
) -> Tensor:
    """RGB uint8 images of any sizes -> the classifier's inputs [B, 3, size, size] on ``device``."""
    transform = eval_transform(size, mean, std)
    return torch.stack([transform(image_to_tensor(image))[0] for image in images]).to(device)


@torch.no_grad()
def class_probabilities(model: nn.Module, inputs: Tensor) -> np.ndarray:
    """Sigmoid of the classifier's logits, float32 [B, K] (model in eval mode)."""
    return torch.sigmoid(model(inputs).float()).cpu().numpy()


def present_classes(
    probabilities: np.ndarray, threshold: float = PRESENT_THRESHOLD
) -> list[list[int]]:
    """Per row of [B, K] probabilities, the classes scoring at least ``threshold``."""
    return [[int(c) for c in np.flatnonzero(row >= threshold)] for row in probabilities]


def class_selection(spec: str, class_names: Sequence[str]) -> list[int] | None:
    """``present`` -> None (each image's present classes); ``all`` -> every class; else the
    comma-separated class names -> their indices (an unknown name is an error)."""
    if spec == PRESENT:
        return None
    if spec == ALL:
        return list(range(len(class_names)))
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in class_names]
    if unknown or not names:
        raise UserError(
            f"--classes {spec!r}: unknown class(es) {', '.join(unknown) or '(none named)'}; "
            f"give present, all or names among the classifier's classes: {', '.join(class_names)}"
        )
    return sorted({list(class_names).index(name) for name in names})


def file_label(name: str) -> str:
    """A class name as a file name part: characters other than letters, digits, '.', '-' and
    '_' become '_'."""
    return re.sub(r"[^\w.-]+", "_", name, flags=re.ASCII) or "_"


def relevance_maps(
    model: nn.Module,
    inputs: Tensor,
    classes: Sequence[Sequence[int]],
    sizes: Sequence[tuple[int, int]],
    method: str,
    scales: Sequence[float],
    flip: bool,
    start_layer: int,
) -> list[np.ndarray]:
    """Per image the maps of its ``classes`` as float32 [K, H, W] in [0, 1] at its ``sizes``."""
    maps = explain_multiscale(model, inputs, classes, method, scales, flip, start_layer)
    return [
        upsample_normalise(m.float().cpu().numpy(), size)
        for m, size in zip(maps, sizes, strict=True)
    ]


def write_relevance(
    out_dir: Path,
    stem: str,
    image: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[int],
    class_names: Sequence[str],
    npy: bool = False,
) -> list[Path]:
    """``<stem>_<class>.png`` heat maps over ``image`` (and ``.npy`` maps) -> the PNG paths."""
    written = []
    for heat, index in zip(maps, classes, strict=True):
        path = out_dir / f"{stem}_{file_label(class_names[index])}.png"
        save_image(path, heat_overlay(image, heat))
        if npy:
            with atomic_path(path.with_suffix(".npy")) as tmp:
                np.save(tmp, heat.astype(np.float32))
        written.append(path)
    return written


def load_explainer(path: Path, device: torch.device) -> tuple[nn.Module, dict, int]:
    """A saved classifier for relevance maps -> (model, info, input size)."""
    try:
        model, info = load_classifier(path, device)
    except ValueError as err:
        if saved_model_kind(path) == "segmenter":
            raise UserError(
                f"{path} is a segmenter, not a classifier; give a classifier model.pt or a run "
                "folder (wsss predict makes masks with a segmenter)"
            ) from err
        raise
    return model, info, input_size(info, path)


# --------------------------------------------------------------------------------------
# wsss explain


@dataclass
class ExplainJob:
    """Everything ``explain_images`` needs, checked by ``plan_explain``."""

    model: nn.Module
    info: dict
    size: int
    images: ImageFiles
    out_dir: Path
    classes: list[int] | None  # None: each image's present classes
    method: str
    scales: list[float]
    flip: bool
    start_layer: int
    batch_size: int
    npy: bool


def plan_explain(
    classifier_or_run: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    method: str = "transformer_attribution",
    classes: str = PRESENT,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    start_layer: int | None = None,
    device: str = "auto",
    batch_size: int = 4,
    npy: bool = False,
) -> ExplainJob:
    """Find the classifier and the images, settle the settings (options, else the run's
    recorded cams settings, else the defaults), load the classifier; every problem is an
    error here, before any image is explained."""
    if method not in METHODS:
        raise UserError(f"unknown relevance method '{method}'; use one of {', '.join(METHODS)}")
    models = classifier_model(classifier_or_run)
    files = ImageFiles.collect(images, exclude=out_dir)
    hint = "set --scales, --flip/--no-flip and --start-layer to use others"
    settings = cams_settings(models.run_dir, method, scales, flip, start_layer, hint)
    check_scales(settings["scales"])
    target = select_device(device)
    model, info, size = load_explainer(models.classifier, target)
    selected = class_selection(classes, info["class_names"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log.info(
        "explaining %d images with %s (%s, classes %s) on %s into %s",
        len(files),
        models.classifier,
        method,
        classes,
        target,
        out,
    )
    return ExplainJob(
        model, info, size, files, out, selected, method, settings["scales"],
        settings["flip"], settings["start_layer"], batch_size, npy,
    )  # fmt: skip


def explain_images(job: ExplainJob, progress: Callable[[int], None] | None = None) -> int:
    """Write every image's maps and ``scores.csv``; ``progress`` is called with the number
    of images after each batch. Returns the number of maps written."""
    device = next(job.model.parameters()).device
    names = list(job.info["class_names"])
    rows, written = [], 0
    for chunk in batches(range(len(job.images)), job.batch_size):
        pictures = [read_image(job.images.paths[i]) for i in chunk]
        inputs = classifier_inputs(pictures, job.size, job.info["mean"], job.info["std"], device)
        probabilities = class_probabilities(job.model, inputs)
        if job.classes is None:
            classes = present_classes(probabilities)
        else:
            classes = [job.classes] * len(chunk)
        sizes = [picture.shape[:2] for picture in pictures]
        maps = relevance_maps(
            job.model, inputs, classes, sizes, job.method, job.scales, job.flip, job.start_layer
        )
        for i, picture, cls, heat, probs in zip(
            chunk, pictures, classes, maps, probabilities, strict=True
        ):
            stem = job.images.stems[i]
            written += len(write_relevance(job.out_dir, stem, picture, heat, cls, names, job.npy))
            row = {"image": str(job.images.paths[i]), "stem": stem}
            row.update({name: float(p) for name, p in zip(names, probs, strict=True)})
            row["explained"] = " ".join(names[c] for c in cls)
            rows.append(row)
        if progress is not None:
            progress(len(chunk))
    write_table(pd.DataFrame(rows), job.out_dir / SCORES_FILE)
    return written
