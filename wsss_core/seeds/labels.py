"""Seeds from relevance maps: background scores, label maps and PSA's CRF seeds.

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

from collections.abc import Sequence

import numpy as np

from wsss_core.data.palette import IGNORE_INDEX
from wsss_core.seeds.crf import CRFParams, dense_crf

MODES = ("threshold", "alpha")


def background_score(maps: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - max_c maps_c)^alpha as [H, W]; all ones when there is no class (K = 0).

    1 - max is clipped to [0, 1] so that maps slightly outside [0, 1] stay well defined.
    """
    check_maps(maps)
    if maps.shape[0] == 0:
        return np.ones(maps.shape[1:], dtype=maps.dtype)
    return background_from_max(maps.max(axis=0), "alpha", alpha)


def fixed_background(maps: np.ndarray, threshold: float) -> np.ndarray:
    """A constant background score ``threshold`` as [H, W] (in the maps' dtype)."""
    check_maps(maps)
    return np.full(maps.shape[1:], threshold, dtype=maps.dtype)


def background_for(maps: np.ndarray, mode: str, value: float) -> np.ndarray:
    """The background score of ``mode`` ("threshold" or "alpha") with parameter ``value``."""
    if mode == "threshold":
        return fixed_background(maps, value)
    if mode == "alpha":
        return background_score(maps, value)
    raise ValueError(f"background mode must be one of {MODES}, got '{mode}'")


def background_from_max(fg_max: np.ndarray, mode: str, value: float) -> np.ndarray:
    """The background score from the per-pixel max over the class maps (same dtype)."""
    if mode == "threshold":
        return np.full(fg_max.shape, value, dtype=fg_max.dtype)
    return np.power(np.clip(1 - fg_max, 0, 1), value).astype(fg_max.dtype, copy=False)


def label_lut(classes: Sequence[int]) -> np.ndarray:
    """Mask label of each row of [background, maps...]: 0 then class index + 1."""
    return np.array([0, *(int(c) + 1 for c in classes)], dtype=np.uint8)


def label_map(maps: np.ndarray, classes: Sequence[int], bg: np.ndarray) -> np.ndarray:
    """Argmax over [bg, maps...] as mask labels (0 background, class index + 1), uint8 [H, W]."""
    check_maps(maps, classes)
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


def crf_label_map(
    image: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[int],
    alpha: float,
    params: CRFParams | None = None,
) -> np.ndarray:
    """Dense-CRF argmax of [(1 - max maps)^alpha, maps...] as mask labels, uint8 [H, W]."""
    check_maps(maps, classes)
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


def check_maps(maps: np.ndarray, classes: Sequence[int] | None = None) -> None:
    if maps.ndim != 3:
        raise ValueError(f"maps must be [K, H, W], got shape {maps.shape}")
    if classes is not None and len(classes) != maps.shape[0]:
        raise ValueError(f"{len(classes)} class indices for {maps.shape[0]} maps")
    if classes is not None and any(int(c) < 0 or int(c) > 253 for c in classes):
        raise ValueError(f"class indices must lie in 0..253, got {list(classes)}")
