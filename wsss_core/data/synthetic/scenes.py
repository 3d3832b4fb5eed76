"""The ``scenes`` family: silhouettes with class textures on photo-like backgrounds.

Each class is a silhouette built from primitives (tree, house, ladder, dumbbell, ...; see
scene_parts.py) with its own texture (checker, bricks, speckle, grid, ...), at a random size
(log-uniform, small ones too), aspect ratio, tilt and mirror; its two colours are drawn from one
law for every class, so colour never tells the class. An image holds 1 to 4 objects (classes
drawn with replacement, so an image may hold two of a class) over a photo-like background: a 1/f
("pink") colour field on either a horizon split (a sky gradient over textured ground) or large
gradient regions, with clutter (blobs, bars and strokes in textures no class has) behind and
sometimes in front of the objects. Every object keeps most of its area visible and some
unambiguous mask pixels.
"""

from __future__ import annotations

import math

import numpy as np

from wsss_core.data.synthetic.compose import (
    MIN_LABELLED_PIXELS,
    MIN_VISIBLE_FRACTION,
    Array,
    Box,
    Layer,
    Placement,
    box_around,
    coverage,
    draw_layers,
    finish,
    grids,
    ignore_band,
    label_map,
    object_centre,
    owner_map,
    random_colours,
)
from wsss_core.data.synthetic.scene_parts import (
    CLASS_TEXTURES,
    CLUTTER_TEXTURES,
    SILHOUETTES,
    pink_noise,
    polyline,
    texture,
)

MAX_OBJECTS = 4
OBJECT_COUNT_WEIGHTS = (0.35, 0.35, 0.2, 0.1)  # of 1, 2, ..., MAX_OBJECTS objects
# Object radius as a fraction of the image side, log-uniform (floored at MIN_RADIUS_PX).
RADIUS_RANGE = (0.11, 0.38)
MIN_RADIUS_PX = 6.0
ASPECT_RANGE = (0.7, 1.45)  # width / height, log-uniform
MAX_TILT = 0.6  # radians either way
PERIOD_JITTER = (0.8, 1.25)
ANGLE_JITTER_DEG = 12.0
MIN_PERIOD_PX = 3.0
MAX_PLACEMENT_TRIES = 8
CLUTTER_RANGE = (0, 3)  # clutter items behind the objects, end exclusive
FRONT_CLUTTER_PROBABILITY = 0.3

SHAPE_FNS = tuple(SILHOUETTES.values())


# --------------------------------------------------------------------------------------
# Background


def _colour_noise(rng: np.random.Generator, shape: tuple[int, int], amplitude: float) -> Array:
    """A 1/f colour field [h, w, 3]: three pink-noise fields mixed by a random 3x3 matrix."""
    fields = np.stack([pink_noise(rng, shape, rng.uniform(0.9, 1.6)) for _ in range(3)], -1)
    mix = rng.normal(0.0, 1.0, (3, 3))
    mix *= amplitude / np.linalg.norm(mix, axis=1, keepdims=True)
    return fields @ mix.T


def _background(rng: np.random.Generator, size: int) -> Array:
    """A horizon split (sky gradient over textured ground) or large gradient regions; 1/f noise."""
    ys = (np.arange(size, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(size, dtype=np.float32) + 0.5)[None, :]
    if rng.random() < 0.5:
        h0 = size * rng.uniform(0.25, 0.7)
        wave = size * rng.uniform(0.0, 0.04)
        horizon = (
            h0
            + rng.uniform(-0.25, 0.25) * (xs - size / 2)
            + wave * np.sin(2 * math.pi * xs / (size * rng.uniform(0.3, 1.0)) + rng.uniform(0, 6.3))
        )
        top, low = rng.uniform(0, 255, (2, 3))
        sky = top + np.clip(ys / h0, 0.0, 1.0)[..., None] * (low - top)
        sky = sky + _colour_noise(rng, (size, size), rng.uniform(2.0, 6.0))
        ground = rng.uniform(0, 255, 3) + _colour_noise(rng, (size, size), rng.uniform(8.0, 20.0))
        ground = ground * (1.0 - rng.uniform(0.0, 0.4) * (ys / size))[..., None]
        w = np.clip(ys - horizon + 0.5, 0.0, 1.0)[..., None]
        canvas = sky * (1 - w) + ground * w
    else:
        c1, c2 = rng.uniform(0, 255, (2, 3))
        angle = rng.uniform(0, 2 * math.pi)
        proj = (xs - size / 2) * math.cos(angle) + (ys - size / 2) * math.sin(angle)
        ramp = np.clip(0.5 + proj / size, 0.0, 1.0)[..., None]
        canvas = c1 + ramp * (c2 - c1) + _colour_noise(rng, (size, size), rng.uniform(6.0, 18.0))
        for _ in range(int(rng.integers(1, 3))):
            # a large region of another colour behind a soft, straight or round edge
            cy, cx = rng.uniform(0, size, 2)
            if rng.random() < 0.5:
                a = rng.uniform(0, 2 * math.pi)
                d = (xs - cx) * math.cos(a) + (ys - cy) * math.sin(a)
            else:
                d = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) - size * rng.uniform(0.2, 0.5)
            w = np.clip(0.5 - d / rng.uniform(1.0, 6.0), 0.0, 1.0)[..., None]
            canvas = canvas + w * (rng.uniform(0, 255, 3) - canvas) * rng.uniform(0.5, 0.9)
    return canvas.astype(np.float32)


# --------------------------------------------------------------------------------------
# Layers


def _paint(
    rng: np.random.Generator,
    box: Box,
    kind: str,
    period: float,
    angle: float,
    centre: tuple[float, float],
    radius: float,
) -> Array:
    """Colours of a textured, slightly shaded surface over ``box`` (angle in radians)."""
    ys, xs = grids(box, 1)
    c1, c2 = random_colours(rng)
    if kind == "mottled":  # continuous 1/f noise between the two colours (clutter only)
        shape = (box[1] - box[0], box[3] - box[2])
        t = np.clip(0.5 + 0.3 * pink_noise(rng, shape, 1.2), 0.0, 1.0)
    else:
        t = texture(kind, rng, ys, xs, period, angle, centre, radius)
    shade_dir = rng.uniform(0, 2 * math.pi)
    shade = rng.uniform(0.0, 0.8) * (
        (xs - centre[1]) * math.cos(shade_dir) + (ys - centre[0]) * math.sin(shade_dir)
    )
    colour = c1 + t[..., None] * (c2 - c1)
    return (colour + shade[..., None]).astype(np.float32)


def _object_layer(
    rng: np.random.Generator, cls: int, size: int, centre: tuple[float, float], radius: float
) -> Layer | None:
    """Class ``cls`` (0-based) around ``centre``: random aspect, tilt, mirror and colours."""
    aspect = math.exp(rng.uniform(*np.log(ASPECT_RANGE)))
    sx, sy = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
    angle = rng.uniform(-MAX_TILT, MAX_TILT)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    box = box_around(centre[1], centre[0], max(sx, sy) + 1.0, size)
    if box is None:
        return None
    ys, xs = grids(box, 2)
    dy, dx = ys - centre[0], xs - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u = mirror * (dx * c + dy * s) / sx
    v = (-dx * s + dy * c) / sy
    alpha = coverage(SHAPE_FNS[cls](u, v))
    kind, relative_period, degrees = CLASS_TEXTURES[cls]
    period = max(relative_period * size * rng.uniform(*PERIOD_JITTER), MIN_PERIOD_PX)
    texture_angle = math.radians(degrees + rng.uniform(-ANGLE_JITTER_DEG, ANGLE_JITTER_DEG))
    colour = _paint(rng, box, kind, period, texture_angle, centre, radius)
    return Layer(cls + 1, box, alpha, colour)


def _star_blob(rng: np.random.Generator, box: Box, centre: tuple[float, float], r: float) -> Array:
    """A random star-shaped polygon-like blob: radius interpolated between 5..9 random vertices."""
    count = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * math.pi, count))
    radii = r * rng.uniform(0.45, 1.0, count)
    ys, xs = grids(box, 2)
    theta = np.arctan2(ys - centre[0], xs - centre[1]) % (2 * math.pi)
    edge = np.interp(theta, angles, radii, period=2 * math.pi)
    return coverage(np.sqrt((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) <= edge)


def _clutter_layer(rng: np.random.Generator, size: int, stroke_only: bool = False) -> Layer | None:
    """A background-labelled blob, bar or curved stroke in a texture no class has."""
    kind = "stroke" if stroke_only else ("blob", "bar", "stroke")[int(rng.integers(3))]
    if kind == "blob":
        centre = (rng.uniform(0, size), rng.uniform(0, size))
        extent = size * rng.uniform(0.08, 0.3)
        box = box_around(centre[1], centre[0], extent + 1.0, size)
        if box is None:
            return None
        alpha = _star_blob(rng, box, centre, extent)
    else:
        p0 = rng.uniform(0, size, 2)
        if kind == "bar":  # a straight pole or plank
            length = size * rng.uniform(0.3, 0.9)
            a = rng.uniform(0, math.pi)
            p2 = p0 + length * np.array([math.sin(a), math.cos(a)])
            p1 = (p0 + p2) / 2
            width = rng.uniform(2.0, max(3.0, size / 10))
        else:  # a curved stroke: a quadratic Bezier curve
            p1, p2 = rng.uniform(0, size, (2, 2))
            width = rng.uniform(1.5, max(2.0, size / 20))
        t = np.linspace(0.0, 1.0, 9)[:, None]
        points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2  # (y, x)
        lo, hi = points.min(axis=0) - width, points.max(axis=0) + width
        box = (
            max(int(lo[0]), 0),
            min(int(math.ceil(hi[0])), size),
            max(int(lo[1]), 0),
            min(int(math.ceil(hi[1])), size),
        )
        if box[0] >= box[1] or box[2] >= box[3]:
            return None
        ys, xs = grids(box, 2)
        pts = [(float(x), float(y)) for y, x in points]
        alpha = coverage(polyline(xs, ys, pts, width / 2))
        centre = (float(points[4, 0]), float(points[4, 1]))
        extent = width
    texture_kind = CLUTTER_TEXTURES[int(rng.integers(len(CLUTTER_TEXTURES)))]
    period = max(size * rng.uniform(0.04, 0.12), MIN_PERIOD_PX)
    angle = rng.uniform(0, 2 * math.pi)
    colour = _paint(rng, box, texture_kind, period, angle, centre, max(extent, 1.0))
    return Layer(0, box, alpha, colour)


# --------------------------------------------------------------------------------------
# Composing one image


def _objects_visible(layers: list[Layer], objects: dict[int, int], size: int) -> bool:
    """True when every object (layer index -> own area) keeps MIN_VISIBLE_FRACTION of its area
    visible and MIN_LABELLED_PIXELS pixels outside the ignore band."""
    owner = owner_map(layers, size)
    labels = np.array([layer.label for layer in layers] + [0], dtype=np.uint8)[owner]
    labelled = ignore_band(labels) != 255
    for index, area in objects.items():
        visible = owner == index
        if visible.sum() < MIN_VISIBLE_FRACTION * area:
            return False
        if (visible & labelled).sum() < MIN_LABELLED_PIXELS:
            return False
    return True


# Uniform over most of the image, or (40 % of the time) overlapping a placed object.
PLACEMENT = Placement(overlap=0.4, distance=(0.5, 1.0), clip=(0.05, 0.95), spread=(0.1, 0.9))


def scene_layers(
    rng: np.random.Generator, num_classes: int, size: int
) -> tuple[Array, list[Layer], dict[int, int]] | None:
    """Draw one scene: (background canvas [S, S, 3] float, layers in drawing order, objects as
    {layer index: own area in pixels}); None when no object could be placed."""
    canvas = _background(rng, size)
    layers: list[Layer] = []
    for _ in range(int(rng.integers(*CLUTTER_RANGE))):
        layer = _clutter_layer(rng, size)
        if layer is not None:
            layers.append(layer)

    num_objects = int(rng.choice(MAX_OBJECTS, p=OBJECT_COUNT_WEIGHTS)) + 1
    classes = rng.integers(num_classes, size=num_objects)
    objects: dict[int, int] = {}
    placed: list[tuple[float, float, float]] = []
    log_lo, log_hi = np.log(RADIUS_RANGE)
    for cls in classes:
        radius = max(size * math.exp(rng.uniform(log_lo, log_hi)), MIN_RADIUS_PX)
        for _ in range(MAX_PLACEMENT_TRIES):
            centre = object_centre(rng, size, placed, radius, PLACEMENT)
            layer = _object_layer(rng, int(cls), size, centre, radius)
            if layer is None:
                continue
            area = int((layer.alpha >= 0.5).sum())
            if area == 0:
                continue
            trial = {**objects, len(layers): area}
            if _objects_visible([*layers, layer], trial, size):
                layers.append(layer)
                objects = trial
                placed.append((centre[0], centre[1], radius))
                break
    if not objects:
        return None
    # Clutter may cross in front of objects, occluding them.
    if rng.random() < FRONT_CLUTTER_PROBABILITY:
        layer = _clutter_layer(rng, size, stroke_only=bool(rng.random() < 0.7))
        if layer is not None and _objects_visible([*layers, layer], objects, size):
            layers.append(layer)
    return canvas, layers, objects


def compose(rng: np.random.Generator, num_classes: int, size: int) -> tuple[Array, Array] | None:
    """Draw one candidate image and mask; None when no object could be placed."""
    drawn = scene_layers(rng, num_classes, size)
    if drawn is None:
        return None
    canvas, layers, _ = drawn
    draw_layers(canvas, layers)
    image = finish(rng, canvas)
    mask = ignore_band(label_map(layers, size))
    return image, mask
