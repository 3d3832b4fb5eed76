"""Fully connected CRF (Krähenbühl & Koltun) over class probabilities, via pydensecrf.

The unary energy is -log(probs) with probabilities clipped to ``[clip, 1]``;
the pairwise terms are a Gaussian smoothness kernel and a bilateral
appearance kernel. The defaults are those of PSA (Ahn & Kwak, CVPR 2018):
Gaussian sxy 3, compat 3; bilateral sxy 80, srgb 13, compat 10; 10 iterations.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydensecrf.densecrf as dcrf

from wsss_core.cli import parse_json_object
from wsss_core.config import schema_field


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF kernel parameters; the defaults (PSA's) are the config schema's ``$defs/crf``,
    which seeds.crf, walk.crf and segmenter.inference.crf share."""

    gauss_sxy: float = schema_field("seeds.crf.gauss_sxy")
    gauss_compat: float = schema_field("seeds.crf.gauss_compat")
    bilateral_sxy: float = schema_field("seeds.crf.bilateral_sxy")
    bilateral_srgb: float = schema_field("seeds.crf.bilateral_srgb")
    bilateral_compat: float = schema_field("seeds.crf.bilateral_compat")
    iterations: int = schema_field("seeds.crf.iterations")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"CRF parameter '{field.name}' must be a number, got {value!r}")
            if field.name == "iterations":
                if int(value) != value or value < 1:
                    raise ValueError(
                        f"CRF parameter 'iterations' must be an integer >= 1, got {value}"
                    )
            elif field.name.endswith("_compat"):
                if value < 0:
                    raise ValueError(f"CRF parameter '{field.name}' must be >= 0, got {value}")
            elif value <= 0:
                raise ValueError(f"CRF parameter '{field.name}' must be > 0, got {value}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> CRFParams:
        """Build from a config mapping: missing keys keep their defaults, unknown keys raise."""
        values = dict(values or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown CRF parameter(s) {', '.join(repr(k) for k in unknown)}; "
                f"known ones are {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def parse_crf_json(text: str, section: str, option: str = "--crf-json") -> CRFParams:
    """CRF parameters from a JSON object given on the command line as ``option``.

    Invalid JSON or a non-object raises JSONArgumentError (a ValueError) naming ``option`` and
    the config ``section``; unknown or invalid parameters raise ValueError (see from_dict).
    """
    return CRFParams.from_dict(parse_json_object(text, option, section))


def dense_crf(
    image: np.ndarray, probs: np.ndarray, params: CRFParams | None = None, clip: float = 1e-5
) -> np.ndarray:
    """Refine class probabilities ``probs`` [C, H, W] on the RGB ``image`` (uint8 [H, W, 3]).

    Returns the CRF's approximate posterior marginals, float32 [C, H, W] (they sum to 1 over
    C at every pixel). ``probs`` need not be normalised: the unary is -log(clip(probs)).
    """
    params = params or CRFParams()
    image = np.asarray(image)
    probs = np.asarray(probs)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"probabilities must be [C, H, W] with H, W = {image.shape[:2]}, got {probs.shape}"
        )
    num_labels, height, width = probs.shape
    if num_labels < 1:
        raise ValueError("probabilities must hold at least one class")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probabilities hold NaN or infinite values")
    if num_labels == 1:
        return np.ones((1, height, width), dtype=np.float32)

    unary = -np.log(np.clip(probs, clip, 1.0)).reshape(num_labels, -1)
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=np.ascontiguousarray(image),
        compat=params.bilateral_compat,
    )
    marginals = crf.inference(int(params.iterations))
    return np.asarray(marginals, dtype=np.float32).reshape(num_labels, height, width)
