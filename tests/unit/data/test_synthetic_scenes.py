"""The scenes family's parts: primitives, textures, 1/f noise, what a scene holds and its mask."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsss_core.data.palette import IGNORE_INDEX
from wsss_core.data.synthetic import render_image, scenes
from wsss_core.data.synthetic.compose import (
    MIN_LABELLED_PIXELS,
    MIN_VISIBLE_FRACTION,
    Layer,
    draw_layers,
    finish,
    ignore_band,
    label_map,
    owner_map,
)
from wsss_core.data.synthetic.scene_parts import (
    CLASS_TEXTURES,
    CLUTTER_TEXTURES,
    SILHOUETTES,
    pink_noise,
    polyline,
    segment_distance,
    texture,
)

SIZE = 96


def test_segment_distance_hand_examples():
    u = np.array([1.0, 3.0, -1.0, 0.5])
    v = np.array([1.0, 0.0, -1.0, 0.0])
    d = segment_distance(u, v, (0.0, 0.0), (2.0, 0.0))
    # above the middle, past the end, before the start (diagonal), on the segment
    np.testing.assert_allclose(d, [1.0, 1.0, math.sqrt(2.0), 0.0])


def test_polyline_is_the_union_of_thick_segments():
    u, v = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    inside = polyline(u, v, [(-1.0, 0.0), (0.0, 0.0), (0.0, 1.0)], 0.1)
    expected = np.zeros((5, 5), dtype=bool)
    expected[2, :3] = True  # the horizontal leg, v = 0, u <= 0
    expected[2:, 2] = True  # the vertical leg, u = 0, v >= 0
    np.testing.assert_array_equal(inside, expected)


def test_silhouettes_have_holes_and_thin_parts():
    grid = np.linspace(-1.0, 1.0, 401)
    u, v = np.meshgrid(grid, grid)
    house = SILHOUETTES["house"](u, v)
    assert not house[(np.abs(u) < 0.1) & (v > 0.4) & (v < 0.7)].any()  # the door is cut out
    assert house[(np.abs(u) > 0.25) & (np.abs(u) < 0.5) & (v > 0.4) & (v < 0.7)].all()
    ladder = SILHOUETTES["ladder"](u, v)
    assert not ladder[(np.abs(u) < 0.28) & (v > 0.12) & (v < 0.38)].any()  # between two rungs
    assert ladder[(np.abs(u) < 0.28) & (np.abs(v) < 0.08)].all()  # the middle rung
    # thin: a rail is 0.22 wide (unit-disc units)
    row = ladder[np.argmin(np.abs(grid - 0.25))]  # v = 0.25, between rungs: only the rails
    assert abs(row.sum() * (grid[1] - grid[0]) - 2 * 0.22) < 0.02


@pytest.mark.parametrize(
    ("kind", "period", "degrees"), CLASS_TEXTURES, ids=[k for k, _, _ in CLASS_TEXTURES]
)
def test_class_textures_blend_both_colours(kind, period, degrees):
    rng = np.random.default_rng(0)
    ys = (np.arange(64, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(64, dtype=np.float32) + 0.5)[None, :]
    t = texture(kind, rng, ys, xs, period * 96.0, math.radians(degrees), (32.0, 32.0), 30.0)
    assert t.shape == (64, 64) and t.min() >= 0.0 and t.max() <= 1.0
    # both colours show: a good share of the surface near each end
    assert (t < 0.2).mean() > 0.1 and (t > 0.8).mean() > 0.1, kind


def test_textures_are_no_stripes_and_clutter_has_none_of_them():
    kinds = [kind for kind, _, _ in CLASS_TEXTURES]
    assert len(set(kinds)) == len(kinds) == len(SILHOUETTES)
    assert not set(kinds) & set(CLUTTER_TEXTURES)
    assert "stripes" not in kinds


def test_gradient_texture_is_a_ramp_through_the_centre():
    rng = np.random.default_rng(3)
    ys = (np.arange(41, dtype=np.float32))[:, None]
    xs = (np.arange(41, dtype=np.float32))[None, :]
    t = texture("gradient", rng, ys, xs, 5.0, 0.7, (20.0, 20.0), 20.0)
    assert t[20, 20] == pytest.approx(0.5)
    # opposite points around the centre sum to one (a linear ramp, within the clip)
    np.testing.assert_allclose(t[20 + 7, 20 - 5] + t[20 - 7, 20 + 5], 1.0, atol=1e-6)


@pytest.mark.parametrize("exponent", [1.0, 1.5])
def test_pink_noise_is_standardised_with_a_one_over_f_spectrum(exponent):
    field = pink_noise(np.random.default_rng(1), (128, 128), exponent)
    assert abs(field.mean()) < 1e-5 and field.std() == pytest.approx(1.0, rel=1e-4)
    # radially averaged amplitude against frequency: the log-log slope is -exponent
    amplitude = np.abs(np.fft.fft2(field))
    fy, fx = np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij")
    f = np.sqrt(fy**2 + fx**2)
    bands = np.geomspace(2 / 128, 0.5, 9)
    centres, means = [], []
    for lo, hi in zip(bands[:-1], bands[1:], strict=True):
        ring = (f >= lo) & (f < hi)
        centres.append(np.sqrt(lo * hi))
        means.append(amplitude[ring].mean())
    slope = np.polyfit(np.log(centres), np.log(means), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


def _scenes(num: int, k: int, seed: int = 4):
    """The drawn scenes of images 0..num-1 (their first candidate, as render_image draws it)."""
    for index in range(num):
        rng = np.random.default_rng([seed, index])
        drawn = scenes.scene_layers(rng, k, SIZE)
        assert drawn is not None
        yield index, rng, drawn


def test_every_visible_object_is_in_the_mask():
    """Each object keeps its share of visible area (occlusion checked here from the layers'
    own coverage, not with the generator's owner map) and unambiguous pixels of its label."""
    for _, _, (_, layers, objects) in _scenes(40, 6):
        mask = ignore_band(label_map(layers, SIZE))
        for index, area in objects.items():
            layer = layers[index]
            y0, y1, x0, x1 = layer.box
            own = np.zeros((SIZE, SIZE), dtype=bool)
            own[y0:y1, x0:x1] = layer.alpha >= 0.5
            assert own.sum() == area > 0
            covered = np.zeros_like(own)
            for later in layers[index + 1 :]:
                ly0, ly1, lx0, lx1 = later.box
                covered[ly0:ly1, lx0:lx1] |= later.alpha >= 0.5
            visible = own & ~covered
            assert visible.sum() >= MIN_VISIBLE_FRACTION * area
            assert set(np.unique(mask[visible]).tolist()) <= {layer.label, IGNORE_INDEX}
            assert (mask[visible] == layer.label).sum() >= MIN_LABELLED_PIXELS
        # every labelled pixel belongs to a visible object of its class
        owner = owner_map(layers, SIZE)
        labelled = (mask != 0) & (mask != IGNORE_INDEX)
        assert np.isin(owner[labelled], list(objects)).all()


def test_render_image_is_the_drawn_scene():
    for index, rng, (canvas, layers, _) in _scenes(5, 5, seed=9):
        draw_layers(canvas, layers)
        image = finish(rng, canvas)
        rendered, mask = render_image(9, index, 5, SIZE, "scenes")
        np.testing.assert_array_equal(rendered, image)
        np.testing.assert_array_equal(mask, ignore_band(label_map(layers, SIZE)))


def test_scenes_hold_more_objects_small_ones_and_clutter():
    counts, areas, with_clutter, repeats = [], [], 0, 0
    for _, _, (_, layers, objects) in _scenes(100, 5):
        counts.append(len(objects))
        areas += [a / SIZE**2 for a in objects.values()]
        with_clutter += any(layer.label == 0 for layer in layers)
        labels = [layers[i].label for i in objects]
        repeats += len(labels) > len(set(labels))
    counts = np.bincount(counts, minlength=scenes.MAX_OBJECTS + 1)
    assert counts[0] == 0 and counts[1:].min() > 0  # 1 to MAX_OBJECTS, each count happens
    assert counts[3:].sum() >= 20
    areas = np.array(areas)
    assert (areas < 0.015).mean() > 0.05 and (areas > 0.08).mean() > 0.05  # small and large
    assert with_clutter >= 60 and repeats >= 10  # clutter in most; two of a class happens


def test_visibility_check_rejects_a_hidden_object():
    colour = np.zeros((8, 8, 3), dtype=np.float32)
    obj = Layer(1, (0, 8, 0, 8), np.ones((8, 8), dtype=np.float32), colour)
    front = Layer(0, (0, 8, 0, 5), np.ones((8, 5), dtype=np.float32), colour[:, :5])
    # 3 of 8 columns stay visible: 37.5 % < MIN_VISIBLE_FRACTION
    assert not scenes._objects_visible([obj, front], {0: 64}, 8)
    narrow = Layer(0, (0, 8, 0, 3), np.ones((8, 3), dtype=np.float32), colour[:, :3])
    # 5 columns visible; the ignore band takes column 3, the border none: 4 x 8 labelled
    assert scenes._objects_visible([obj, narrow], {0: 64}, 8)
