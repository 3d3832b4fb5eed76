"""The background-parameter sweep of the seeds: a confusion matrix for every fixed background
score t (``mode="threshold"``) or exponent alpha (``mode="alpha"``), in one pass over the
images, and the parameter with the best mIoU. The seeds are those of
``wsss_core.seeds.labels``: argmax over [background, maps...], ties to the background.

The best parameter is picked on the images it scores, which flatters every method; the
held-out choice does not: the parameter is chosen on every n-th image of the split
(``split_holdout``) and scored on the others (``holdout_choice``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from wsss_core.cams.store import CamReader
from wsss_core.data.layout import load_gt_mask
from wsss_core.data.palette import IGNORE_INDEX
from wsss_core.evaluate.metrics import ConfusionMatrix
from wsss_core.seeds.labels import MODES, background_from_max, check_maps, label_lut

DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
DEFAULT_ALPHAS = (1, 2, 4, 8, 16, 32)


def sweep_counts(
    maps: np.ndarray,
    classes: Sequence[int],
    gt: np.ndarray,
    values: Sequence[float],
    num_classes: int,
    mode: str = "threshold",
) -> np.ndarray:
    """Confusion counts [V, C, C] of one image for every background parameter in ``values``.

    Equal to updating a confusion matrix with ``seed_labels(maps, classes, mode, v)`` for
    each v, but the maps' max and argmax are computed once and all V matrices come from
    one bincount. Ground-truth pixels labelled 255 are left out.
    """
    if mode not in MODES:
        raise ValueError(f"background mode must be one of {MODES}, got '{mode}'")
    check_maps(maps, classes)
    if gt.shape != maps.shape[1:]:
        raise ValueError(f"ground truth {gt.shape} and maps {maps.shape[1:]} differ in size")
    lut = label_lut(classes)
    if lut.max() >= num_classes:
        raise ValueError(f"class index {int(lut.max()) - 1} outside the {num_classes - 1} classes")
    keep = gt.ravel() != IGNORE_INDEX
    target = gt.ravel()[keep].astype(np.int64)
    if target.size and target.max() >= num_classes:
        raise ValueError(
            f"ground truth holds label {int(target.max())} outside 0..{num_classes - 1} (and 255)"
        )
    flat = maps.reshape(maps.shape[0], gt.size)[:, keep]
    if maps.shape[0]:
        fg_max = flat.max(axis=0)
        fg_label = lut[1:][flat.argmax(axis=0)].astype(np.int64)
    else:
        fg_max = np.zeros(target.size, dtype=maps.dtype)
        fg_label = np.zeros(target.size, dtype=np.int64)
    cells = num_classes * num_classes
    index = np.empty((len(values), target.size), dtype=np.int64)
    for row, value in enumerate(values):
        bg = background_from_max(fg_max, mode, value)  # K = 0: fg_max = 0, background 1
        pred = np.where(fg_max > bg, fg_label, 0)
        index[row] = row * cells + target * num_classes + pred
    counts = np.bincount(index.ravel(), minlength=len(values) * cells)
    return counts.reshape(len(values), num_classes, num_classes)


def sweep_thresholds(
    store_path: str | os.PathLike,
    data_root: str | os.PathLike,
    ids: Iterable[str],
    num_classes: int,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    mode: str = "threshold",
    progress: bool = False,
) -> dict[float, ConfusionMatrix]:
    """Confusion matrix of the seeds for every background parameter, one pass over the images.

    ``thresholds`` are fixed background scores (``mode="threshold"``) or exponents alpha
    (``mode="alpha"``). Each image's maps (upsampled to image size) and ground truth are
    read once.
    """
    if mode not in MODES:
        raise ValueError(f"background mode must be one of {MODES}, got '{mode}'")
    values = [float(v) for v in thresholds]
    if not values:
        raise ValueError("no thresholds to sweep: give at least one value")
    if len(set(values)) != len(values):
        raise ValueError(f"thresholds repeat a value: {values}")
    ids = list(ids)
    if not ids:
        raise ValueError("no image ids to evaluate (empty split?)")
    counts = np.zeros((len(values), num_classes, num_classes), dtype=np.int64)
    with CamReader(store_path) as reader:
        for image_id in tqdm(ids, desc="seed sweep", disable=not progress):
            maps, classes = reader.upsampled(image_id)
            gt = load_gt_mask(data_root, image_id, num_classes=num_classes)
            if gt.shape != maps.shape[1:]:
                raise ValueError(
                    f"{store_path}: maps of '{image_id}' are {maps.shape[1:]} but its ground truth "
                    f"is {gt.shape}; the store was made from other images: re-run extract_cams"
                )
            counts += sweep_counts(maps, classes, gt, values, num_classes, mode)
    result: dict[float, ConfusionMatrix] = {}
    for value, matrix in zip(values, counts, strict=True):
        cm = ConfusionMatrix(num_classes)
        cm.matrix += matrix
        result[value] = cm
    return result


def best_threshold(sweep: dict[float, ConfusionMatrix]) -> tuple[float, ConfusionMatrix]:
    """The parameter with the highest mIoU (the smallest one on ties) and its matrix."""
    if not sweep:
        raise ValueError("empty sweep: no threshold was evaluated")
    best_value, best_miou = None, -np.inf
    for value in sorted(sweep):
        miou = sweep[value].scores().miou
        if not np.isnan(miou) and miou > best_miou:
            best_value, best_miou = value, miou
    if best_value is None:
        raise ValueError("no threshold has a score: the ground truth holds no labelled pixel")
    return best_value, sweep[best_value]


def split_holdout(ids: Sequence[str], every: int) -> tuple[list[str], list[str]]:
    """(held-out, scored) ids: every ``every``-th id (the 1st, the (n+1)-th, ...) is held out."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 2:
        raise ValueError(
            "config key cams.eval.holdout_every must be an integer >= 2 (or 0 for none), "
            f"got {every!r}"
        )
    held = [image_id for i, image_id in enumerate(ids) if i % every == 0]
    scored = [image_id for i, image_id in enumerate(ids) if i % every != 0]
    if not scored:
        raise ValueError(
            f"{len(ids)} image(s) leave none to score after holding out every {every}-th: "
            "lower cams.eval.holdout_every or set it to 0"
        )
    return held, scored


def merge_sweeps(
    a: dict[float, ConfusionMatrix], b: dict[float, ConfusionMatrix]
) -> dict[float, ConfusionMatrix]:
    """The sweep of the union of two disjoint image sets: matrices added value by value."""
    if set(a) != set(b):
        raise ValueError(f"sweeps over different values: {sorted(a)} and {sorted(b)}")
    merged = {}
    for value in a:
        cm = ConfusionMatrix(a[value].num_classes)
        cm.merge(a[value])
        cm.merge(b[value])
        merged[value] = cm
    return merged


def holdout_choice(
    held: dict[float, ConfusionMatrix], scored: dict[float, ConfusionMatrix]
) -> tuple[float, ConfusionMatrix]:
    """The best parameter on the held-out sweep and the scored images' matrix at it."""
    value, _ = best_threshold(held)
    if value not in scored:
        raise ValueError(f"the scored sweep has no value {value}: both must sweep the same values")
    return value, scored[value]
