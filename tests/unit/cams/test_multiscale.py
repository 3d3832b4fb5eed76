"""Multi-scale and flip inference of relevance maps (wsss_core.cams.multiscale)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_relevance import hybrid_vit, images, plain_vit

from wsss_core.cams.multiscale import explain_multiscale, resize_maps, scaled_size
from wsss_core.cams.relevance import explain

torch.set_num_threads(1)
CLASSES = [[0, 2], [1]]


def test_scaled_size_rounds_to_the_stride():
    assert scaled_size((224, 224), 1.0, (16, 16)) == (224, 224)
    assert scaled_size((224, 224), 0.5, (16, 16)) == (112, 112)
    assert scaled_size((384, 384), 0.75, (16, 16)) == (288, 288)
    assert scaled_size((96, 96), 1.5, (8, 8)) == (144, 144)
    assert scaled_size((24, 40), 0.5, (8, 8)) == (16, 24)  # 1.5 and 2.5 strides: halves round up
    assert scaled_size((100, 100), 1.0, (16, 16)) == (96, 96)
    assert scaled_size((32, 32), 0.1, (16, 16)) == (16, 16)  # never below one stride


@pytest.mark.parametrize("method", ["transformer_attribution", "full_lrp", "rollout"])
def test_scale_one_without_flip_is_explain(method):
    model = plain_vit(dynamic=True)
    x = images(2, 16)
    got = explain_multiscale(model, x, CLASSES, method, scales=[1.0])
    expected = explain(model, x, CLASSES, method)
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)


@pytest.mark.parametrize("method", ["transformer_attribution", "attn_gradcam", "full_lrp"])
def test_flip_of_a_symmetric_image_adds_the_mirrored_map(method):
    """A mirror-symmetric input gives the same maps when flipped; flipped back they are
    the mirror images, so flip inference gives map + mirror(map)."""
    model = plain_vit(dynamic=True)
    half = images(2, 16)[..., :8]
    x = torch.cat([half, half.flip(-1)], dim=-1)
    assert torch.equal(x, x.flip(-1))
    got = explain_multiscale(model, x, CLASSES, method, scales=[1.0], flip=True)
    for g, e in zip(got, explain(model, x, CLASSES, method), strict=True):
        # equal up to rounding: the flip doubles the batch, so matrix products round
        # differently, and full_lrp's rules amplify that to ~1e-11 of the map's maximum
        scale = e.abs().max().item()
        torch.testing.assert_close(g, e + e.flip(-1), rtol=1e-12, atol=1e-10 * scale)


def test_flip_of_any_image_is_the_flipped_back_map():
    model = plain_vit(dynamic=True)
    x = images(2, 16)
    got = explain_multiscale(model, x, CLASSES, scales=[1.0], flip=True)
    plain = explain(model, x, CLASSES)
    mirrored = explain(model, x.flip(-1), CLASSES)
    for g, a, b in zip(got, plain, mirrored, strict=True):
        torch.testing.assert_close(g, a + b.flip(-1), rtol=1e-12, atol=1e-15)


def test_scales_are_resized_to_the_grid_of_scale_one_and_summed():
    model = plain_vit(dynamic=True)
    x = images(2, 16)
    got = explain_multiscale(model, x, CLASSES, scales=[1.0, 0.5, 2.0])
    small = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    large = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    parts = [explain(model, v, CLASSES) for v in (x, small, large)]
    assert parts[1][0].shape[-2:] == (2, 2) and parts[2][0].shape[-2:] == (8, 8)
    for b in range(2):
        expected = sum(resize_maps(p[b], (4, 4)) for p in parts)
        torch.testing.assert_close(got[b], expected, rtol=1e-12, atol=1e-15)
        assert got[b].shape == (len(CLASSES[b]), 4, 4)


def test_hybrid_sizes_are_multiples_of_the_total_stride():
    model = hybrid_vit()  # stem stride 4 x patch 2
    x = images(1, 32)
    got = explain_multiscale(model, x, [[1]], scales=[1.0, 0.75, 1.25], flip=True)
    assert got[0].shape == (1, 4, 4)
    assert torch.isfinite(got[0]).all()
    # 0.75 * 32 = 24 = 3 strides: a 3x3 token grid resized to 4x4
    part = explain(model, F.interpolate(x, size=(24, 24), mode="bilinear", antialias=True), [[1]])
    assert part[0].shape == (1, 3, 3)


def test_resize_maps_values():
    maps = torch.tensor([[[0.0, 2.0], [4.0, -2.0]]])
    up = resize_maps(maps, (4, 4))
    w = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    torch.testing.assert_close(up[0], w @ maps[0] @ w.T)
    assert resize_maps(torch.zeros(0, 2, 2), (4, 4)).shape == (0, 4, 4)


def test_bad_scales_and_static_models_raise():
    with pytest.raises(ValueError, match="scales"):
        explain_multiscale(plain_vit(dynamic=True), images(1, 16), [[0]], scales=[])
    with pytest.raises(ValueError, match="scales"):
        explain_multiscale(plain_vit(dynamic=True), images(1, 16), [[0]], scales=[1.0, 0])
    with pytest.raises(ValueError, match="dynamic_img_size"):
        explain_multiscale(plain_vit(dynamic=False), images(1, 16), [[0]], scales=[1.0, 0.5])
