"""Dense CRF wrapper: parameters, posterior marginals on tiny two-region images."""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
from pydensecrf.utils import unary_from_softmax

from wsss_core.seeds.crf import CRFParams, dense_crf

H, W = 12, 16


def two_region_image() -> np.ndarray:
    """Left half black, right half white."""
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[:, W // 2 :] = 255
    return image


def region_labels() -> np.ndarray:
    return np.broadcast_to((np.arange(W) >= W // 2).astype(np.int64), (H, W))


def noisy_probs(seed: int = 0) -> np.ndarray:
    """Two-class probabilities that lean weakly to the right region under strong noise."""
    rng = np.random.default_rng(seed)
    lean = np.where(np.arange(W) >= W // 2, 0.1, -0.1)[None, :]
    p1 = np.clip(0.5 + lean + rng.uniform(-0.3, 0.3, (H, W)), 0.01, 0.99)
    return np.stack([1 - p1, p1])


def test_params_defaults_are_psa() -> None:
    params = CRFParams()
    assert params.to_dict() == {
        "gauss_sxy": 3.0,
        "gauss_compat": 3.0,
        "bilateral_sxy": 80.0,
        "bilateral_srgb": 13.0,
        "bilateral_compat": 10.0,
        "iterations": 10,
    }


def test_params_from_dict_keeps_defaults_for_missing_keys() -> None:
    params = CRFParams.from_dict({"bilateral_srgb": 5, "iterations": 3})
    assert params.bilateral_srgb == 5
    assert params.iterations == 3
    assert params.gauss_sxy == 3.0
    assert CRFParams.from_dict(None) == CRFParams()


def test_params_unknown_key_is_named() -> None:
    with pytest.raises(ValueError, match="'bilateral_rgb'"):
        CRFParams.from_dict({"bilateral_rgb": 13})


@pytest.mark.parametrize(
    ("key", "value"),
    [("iterations", 0), ("iterations", 2.5), ("gauss_sxy", -1), ("bilateral_srgb", "13")],
)
def test_params_bad_values_are_named(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        CRFParams.from_dict({key: value})


def test_noisy_probabilities_follow_the_colour_edge() -> None:
    probs = noisy_probs()
    # the unary alone is wrong on about a third of the pixels
    assert (probs.argmax(0) != region_labels()).mean() > 0.25
    marginals = dense_crf(two_region_image(), probs)
    np.testing.assert_array_equal(marginals.argmax(0), region_labels())


def test_misplaced_boundary_moves_to_the_colour_edge() -> None:
    # the probabilities put the boundary two columns left of the colour edge
    p1 = np.broadcast_to(np.where(np.arange(W) >= W // 2 - 2, 0.6, 0.4), (H, W))
    marginals = dense_crf(two_region_image(), np.stack([1 - p1, p1]))
    np.testing.assert_array_equal(marginals.argmax(0), region_labels())


def test_marginals_are_distributions() -> None:
    probs = np.concatenate([noisy_probs(1), np.full((1, H, W), 0.2)])
    marginals = dense_crf(two_region_image(), probs)
    assert marginals.dtype == np.float32
    assert marginals.shape == (3, H, W)
    assert marginals.min() >= 0
    np.testing.assert_allclose(marginals.sum(0), 1.0, atol=1e-5)


def test_flat_probabilities_stay_flat() -> None:
    marginals = dense_crf(two_region_image(), np.full((2, H, W), 0.5))
    np.testing.assert_allclose(marginals, 0.5, atol=1e-6)


def test_without_pairwise_terms_marginals_are_normalised_probs() -> None:
    probs = noisy_probs(2)
    probs[1] *= 0.7  # unnormalised input: the unary is -log p, so Q = p / sum(p)
    params = CRFParams(gauss_compat=0, bilateral_compat=0)
    marginals = dense_crf(two_region_image(), probs, params)
    np.testing.assert_allclose(marginals, probs / probs.sum(0), atol=1e-5)


def test_equals_pydensecrf_with_its_softmax_unary() -> None:
    """Same result as pydensecrf driven the way PSA's crf_inference drives it."""
    image, probs = two_region_image(), noisy_probs(3)
    params = CRFParams(gauss_sxy=2, bilateral_sxy=20, bilateral_srgb=7, iterations=4)
    crf = dcrf.DenseCRF2D(W, H, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=2, compat=3)
    crf.addPairwiseBilateral(sxy=20, srgb=7, rgbim=np.copy(image), compat=10)
    expected = np.array(crf.inference(4)).reshape(2, H, W)
    np.testing.assert_allclose(dense_crf(image, probs, params), expected, atol=1e-6)


def test_non_contiguous_image_is_accepted() -> None:
    image = np.ascontiguousarray(two_region_image()[:, ::-1])[:, ::-1]  # a reversed view
    assert not image.flags.c_contiguous
    marginals = dense_crf(image, noisy_probs())
    np.testing.assert_array_equal(marginals.argmax(0), region_labels())


def test_single_class_is_certain() -> None:
    marginals = dense_crf(two_region_image(), np.full((1, H, W), 0.3))
    np.testing.assert_array_equal(marginals, np.ones((1, H, W), dtype=np.float32))


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(two_region_image().astype(np.float32), noisy_probs())
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        dense_crf(two_region_image(), noisy_probs()[:, :, :-1])
    with pytest.raises(ValueError, match="NaN"):
        dense_crf(two_region_image(), np.full((2, H, W), np.nan))
