"""Seeds from relevance maps: background scores, label maps, threshold sweeps, CRF seeds.

Relevance maps arrive as ``maps`` [K, H, W] in [0, 1] (max-normalised per class) for
the K classes present in an image, with ``classes`` their 0-based foreground class
indices (mask label = index + 1). A background score [H, W] is put in front of the
maps and the argmax over [background, maps...] is the label map; ties go to the
background (the first entry), as ``np.argmax`` does.

Two backgrounds are used, as in PSA (Ahn & Kwak, CVPR 2018):
- ``threshold``: a fixed background score t at every pixel;
- ``alpha``: (1 - max_c map_c)^alpha, high where no class is relevant.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from wsss_core.cam_store import CamReader
from wsss_core.crf import CRFParams, dense_crf
from wsss_core.data.voc import load_gt_mask
from wsss_core.metrics import ConfusionMatrix
from wsss_core.palette import IGNORE_INDEX

MODES = ("threshold", "alpha")
DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
DEFAULT_ALPHAS = (1, 2, 4, 8, 16, 32)


def background_score(maps: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - max_c maps_c)^alpha as [H, W]; all ones when there is no class (K = 0).

    1 - max is clipped to [0, 1] so that maps slightly outside [0, 1] stay well defined.
    """
    _check_maps(maps)
    if maps.shape[0] == 0:
        return np.ones(maps.shape[1:], dtype=maps.dtype)
    return _background_from_max(maps.max(axis=0), "alpha", alpha)


def fixed_background(maps: np.ndarray, threshold: float) -> np.ndarray:
    """A constant background score ``threshold`` as [H, W] (in the maps' dtype)."""
    _check_maps(maps)
    return np.full(maps.shape[1:], threshold, dtype=maps.dtype)


def background_for(maps: np.ndarray, mode: str, value: float) -> np.ndarray:
    """The background score of ``mode`` ("threshold" or "alpha") with parameter ``value``."""
    if mode == "threshold":
        return fixed_background(maps, value)
    if mode == "alpha":
        return background_score(maps, value)
    raise ValueError(f"background mode must be one of {MODES}, got '{mode}'")


def _background_from_max(fg_max: np.ndarray, mode: str, value: float) -> np.ndarray:
    """The background score from the per-pixel max over the class maps (same dtype)."""
    if mode == "threshold":
        return np.full(fg_max.shape, value, dtype=fg_max.dtype)
    return np.power(np.clip(1 - fg_max, 0, 1), value).astype(fg_max.dtype, copy=False)


def label_lut(classes: Sequence[int]) -> np.ndarray:
    """Mask label of each row of [background, maps...]: 0 then class index + 1."""
    return np.array([0, *(int(c) + 1 for c in classes)], dtype=np.uint8)


def label_map(maps: np.ndarray, classes: Sequence[int], bg: np.ndarray) -> np.ndarray:
    """Argmax over [bg, maps...] as mask labels (0 background, class index + 1), uint8 [H, W]."""
    _check_maps(maps, classes)
    if bg.shape != maps.shape[1:]:
        raise ValueError(f"background score {bg.shape} and maps {maps.shape[1:]} differ in size")
    scores = np.concatenate([bg[None].astype(maps.dtype, copy=False), maps], axis=0)
    return label_lut(classes)[np.argmax(scores, axis=0)]


def threshold_labels(maps: np.ndarray, classes: Sequence[int], threshold: float) -> np.ndarray:
    """Label map with a fixed background score ``threshold``."""
    return label_map(maps, classes, fixed_background(maps, threshold))


def alpha_labels(maps: np.ndarray, classes: Sequence[int], alpha: float) -> np.ndarray:
    """Label map with the background score (1 - max_c maps_c)^alpha."""
    return label_map(maps, classes, background_score(maps, alpha))


def seed_labels(maps: np.ndarray, classes: Sequence[int], mode: str, value: float) -> np.ndarray:
    """Label map for a background ``mode`` ("threshold" or "alpha") and its parameter."""
    return label_map(maps, classes, background_for(maps, mode, value))


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
    _check_maps(maps, classes)
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
        bg = _background_from_max(fg_max, mode, value)  # K = 0: fg_max = 0, background 1
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


def crf_label_map(
    image: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[int],
    alpha: float,
    params: CRFParams | None = None,
) -> np.ndarray:
    """Dense-CRF argmax of [(1 - max maps)^alpha, maps...] as mask labels, uint8 [H, W]."""
    _check_maps(maps, classes)
    scores = np.concatenate([background_score(maps, alpha)[None], maps], axis=0)
    marginals = dense_crf(image, scores, params)
    return label_lut(classes)[np.argmax(marginals, axis=0)]


def crf_seeds(
    image: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[int],
    alpha_low: float = 4,
    alpha_high: float = 32,
    params: CRFParams | None = None,
) -> np.ndarray:
    """PSA's confident seeds: uint8 [H, W] with 0 background, class + 1 foreground, 255 unsure.

    The low-alpha CRF result (strong background score) gives confident foreground where its
    argmax is a class; the high-alpha CRF result (weak background score) gives confident
    background where its argmax is still the background; every other pixel is 255. As in
    PSA, high-alpha background wins over low-alpha foreground where both hold.
    """
    if alpha_low > alpha_high:
        raise ValueError(f"alpha_low ({alpha_low}) must not exceed alpha_high ({alpha_high})")
    low = crf_label_map(image, maps, classes, alpha_low, params)
    high = crf_label_map(image, maps, classes, alpha_high, params)
    seeds = np.where(low == 0, IGNORE_INDEX, low).astype(np.uint8)
    seeds[high == 0] = 0
    return seeds


def _check_maps(maps: np.ndarray, classes: Sequence[int] | None = None) -> None:
    if maps.ndim != 3:
        raise ValueError(f"maps must be [K, H, W], got shape {maps.shape}")
    if classes is not None and len(classes) != maps.shape[0]:
        raise ValueError(f"{len(classes)} class indices for {maps.shape[0]} maps")
    if classes is not None and any(int(c) < 0 or int(c) > 253 for c in classes):
        raise ValueError(f"class indices must lie in 0..253, got {list(classes)}")
