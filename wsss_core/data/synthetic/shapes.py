"""The ``shapes`` family: textured geometric shapes on smooth cluttered backgrounds.

Each class is a shape with its own texture (kind and orientation tied to the class, period
and phase jittered). Colours are drawn from one distribution for every class, so colour
never tells the class. An image holds 1 to 3 objects of distinct classes at random scales,
rotations and positions, drawn in order (later objects occlude earlier ones), over a smooth
random background with distractor blobs and lines that belong to no class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wsss_core.data.synthetic.compose import (
    MIN_LABELLED_PIXELS,
    MIN_VISIBLE_FRACTION,
    Array,
    Box,
    Layer,
    Placement,
    bilinear_upsample,
    box_around,
    coverage,
    draw_layers,
    finish,
    grids,
    ignore_band,
    label_map,
    object_centre,
    random_colours,
)

MAX_OBJECTS = 3
# Object radius as a fraction of the image side (floored at MIN_RADIUS_PX).
RADIUS_RANGE = (0.13, 0.28)
MIN_RADIUS_PX = 7.0
MAX_PLACEMENT_TRIES = 8


# --------------------------------------------------------------------------------------
# Shapes: inside tests in the object's unit frame; every shape fits in the unit disc.


def _disc(u: Array, v: Array) -> Array:
    return u * u + v * v <= 0.95**2


def _square(u: Array, v: Array) -> Array:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.68


def _regular_polygon(u: Array, v: Array, sides: int, circumradius: float, start: float) -> Array:
    """Inside a regular polygon: every edge's outward normal projection is below the inradius."""
    inradius = circumradius * math.cos(math.pi / sides)
    inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for k in range(sides):
        a = start + 2 * math.pi * k / sides
        inside &= u * math.cos(a) + v * math.sin(a) <= inradius
    return inside


def _triangle(u: Array, v: Array) -> Array:
    # Edge normals at -90, 30 and 150 degrees: one vertex on +v, two below.
    return _regular_polygon(u, v + 0.05, 3, 0.95, -math.pi / 2)


def _ring(u: Array, v: Array) -> Array:
    r2 = u * u + v * v
    return (r2 <= 0.95**2) & (r2 >= 0.5**2)


def _cross(u: Array, v: Array) -> Array:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 0.94)) | ((av <= 0.3) & (au <= 0.94))


def _star(u: Array, v: Array) -> Array:
    """Five-pointed star: fold the angle into one half-spike and test against its edge."""
    points, outer, inner = 5, 0.97, 0.42
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u) + math.pi / 2
    half = math.pi / points
    phi = np.abs(np.mod(theta + half, 2 * half) - half)
    # Edge from the tip (outer, 0) to the notch (inner, half); outward normal n.
    p1 = np.array([outer, 0.0])
    p2 = np.array([inner * math.cos(half), inner * math.sin(half)])
    edge = p2 - p1
    n = np.array([-edge[1], edge[0]])
    if n @ p1 < 0:
        n = -n
    return r * (np.cos(phi) * n[0] + np.sin(phi) * n[1]) <= n @ p1


def _crescent(u: Array, v: Array) -> Array:
    return (u * u + v * v <= 0.95**2) & ((u - 0.42) ** 2 + v * v > 0.75**2)


def _hexagon(u: Array, v: Array) -> Array:
    return _regular_polygon(u, v, 6, 0.95, 0.0)


def _lshape(u: Array, v: Array) -> Array:
    stem = (u >= -0.6) & (u <= -0.12) & (v >= -0.7) & (v <= 0.7)
    foot = (u >= -0.6) & (u <= 0.6) & (v >= 0.22) & (v <= 0.7)
    return stem | foot


def _arrow(u: Array, v: Array) -> Array:
    shaft = (u >= -0.9) & (u <= 0.1) & (np.abs(v) <= 0.2)
    head = (u >= 0.1) & (u <= 0.9) & (np.abs(v) <= 0.6 * (0.9 - u) / 0.8)
    return shaft | head


def _heart(u: Array, v: Array) -> Array:
    # Implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, y up, scaled into the unit disc.
    x = u * 1.3
    y = 0.25 - v * 1.3
    q = x * x + y * y - 1.0
    return q * q * q - x * x * y * y * y <= 0


def _hourglass(u: Array, v: Array) -> Array:
    av = np.abs(v)
    return (av <= 0.78) & (np.abs(u) <= 0.6 * av + 0.08)


ShapeFn = Callable[[Array, Array], Array]

SHAPES: dict[str, ShapeFn] = {
    "disc": _disc,
    "square": _square,
    "triangle": _triangle,
    "ring": _ring,
    "cross": _cross,
    "star": _star,
    "crescent": _crescent,
    "hexagon": _hexagon,
    "lshape": _lshape,
    "arrow": _arrow,
    "heart": _heart,
    "hourglass": _hourglass,
}
MAX_CLASSES = len(SHAPES)


# --------------------------------------------------------------------------------------
# Textures: values in [0, 1] that blend an object's two colours.


@dataclass(frozen=True)
class TextureSpec:
    """A class's texture: its kind, base orientation (degrees) and period (fraction of side)."""

    kind: str
    angle: float
    period: float


# One texture per class, in the order of SHAPES.
CLASS_TEXTURES: tuple[TextureSpec, ...] = (
    TextureSpec("stripes", 0.0, 0.09),
    TextureSpec("checker", 15.0, 0.10),
    TextureSpec("dots", 0.0, 0.09),
    TextureSpec("waves", 90.0, 0.09),
    TextureSpec("stripes", 60.0, 0.09),
    TextureSpec("crosshatch", 30.0, 0.10),
    TextureSpec("concentric", 0.0, 0.08),
    TextureSpec("stripes", 120.0, 0.09),
    TextureSpec("waves", 30.0, 0.09),
    TextureSpec("dots", 45.0, 0.13),
    TextureSpec("checker", 45.0, 0.07),
    TextureSpec("crosshatch", 0.0, 0.14),
)
ANGLE_JITTER_DEG = 12.0
PERIOD_JITTER = (0.8, 1.25)
MIN_PERIOD_PX = 4.0


def _square_wave(z: Array) -> Array:
    """A soft square wave in [0, 1]."""
    return np.clip(0.5 + 1.5 * np.sin(z), 0.0, 1.0)


def _texture(
    kind: str,
    ys: Array,
    xs: Array,
    angle: float,
    period: float,
    phase: float,
    centre: tuple[float, float],
) -> Array:
    """Evaluate a texture on pixel-centre coordinates (image frame)."""
    c, s = math.cos(angle), math.sin(angle)
    k = 2 * math.pi / period
    a = k * (xs * c + ys * s) + phase
    b = k * (-xs * s + ys * c) + 1.7 * phase
    if kind == "stripes":
        t = _square_wave(a)
    elif kind == "waves":
        t = _square_wave(a + 1.3 * np.sin(0.5 * b))
    elif kind == "checker":
        t = np.clip(0.5 + 2.0 * np.sin(a) * np.sin(b), 0.0, 1.0)
    elif kind == "dots":
        t = np.clip(2.5 * (np.cos(a) + np.cos(b) - 0.9), 0.0, 1.0)
    elif kind == "crosshatch":
        t = np.clip(3.0 * (np.maximum(np.cos(a), np.cos(b)) - 0.55), 0.0, 1.0)
    elif kind == "concentric":
        cy, cx = centre
        t = _square_wave(k * np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2) + phase)
    elif kind == "plain":
        t = np.zeros(np.broadcast_shapes(ys.shape, xs.shape))
    else:
        raise ValueError(f"unknown texture kind '{kind}'")
    return np.broadcast_to(t, np.broadcast_shapes(ys.shape, xs.shape))


def _shape_alpha(
    shape: ShapeFn,
    box: Box,
    centre: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
) -> Array:
    ys, xs = grids(box, 2)
    cy, cx = centre
    dy, dx = ys - cy, xs - cx
    c, s = math.cos(angle), math.sin(angle)
    u = (dx * c + dy * s) / radii[1]
    v = (-dx * s + dy * c) / radii[0]
    return coverage(shape(u, v))


def _paint(
    rng: np.random.Generator,
    box: Box,
    texture: tuple[str, float, float],
    centre: tuple[float, float],
) -> Array:
    """Colours of a textured, slightly shaded surface over ``box``."""
    kind, angle, period = texture
    ys, xs = grids(box, 1)
    t = _texture(kind, ys, xs, angle, period, rng.uniform(0, 2 * math.pi), centre)
    c1, c2 = random_colours(rng)
    shade_dir = rng.uniform(0, 2 * math.pi)
    shade = rng.uniform(0.0, 0.8) * (
        (xs - centre[1]) * math.cos(shade_dir) + (ys - centre[0]) * math.sin(shade_dir)
    )
    colour = c1 + t[..., None] * (c2 - c1)
    return (colour + shade[..., None]).astype(np.float32)


def _object_layer(
    rng: np.random.Generator, cls: int, size: int, centre: tuple[float, float], radius: float
) -> Layer | None:
    name = list(SHAPES)[cls]
    spec = CLASS_TEXTURES[cls]
    aspect = rng.uniform(0.85, 1.15)
    radii = (radius * aspect, radius / aspect)
    angle = rng.uniform(0, 2 * math.pi)
    box = box_around(centre[1], centre[0], max(radii) + 1.0, size)
    if box is None:
        return None
    alpha = _shape_alpha(SHAPES[name], box, centre, radii, angle)
    tex_angle = math.radians(spec.angle + rng.uniform(-ANGLE_JITTER_DEG, ANGLE_JITTER_DEG))
    period = max(spec.period * size * rng.uniform(*PERIOD_JITTER), MIN_PERIOD_PX)
    colour = _paint(rng, box, (spec.kind, tex_angle, period), centre)
    return Layer(cls + 1, box, alpha, colour)


def _blob_alpha(rng: np.random.Generator, box: Box, centre: tuple[float, float], r: float) -> Array:
    """An elongated, wobbly blob (no class shape): r(theta) modulated by two harmonics."""
    ys, xs = grids(box, 2)
    cy, cx = centre
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    aspect = rng.uniform(0.3, 0.6)
    u = ((xs - cx) * c + (ys - cy) * s) / r
    v = (-(xs - cx) * s + (ys - cy) * c) / (r * aspect)
    theta = np.arctan2(v, u)
    wobble = (
        1.0
        + 0.15 * np.sin(2 * theta + rng.uniform(0, 6.3))
        + 0.1 * np.sin(3 * theta + rng.uniform(0, 6.3))
    )
    return coverage(np.sqrt(u * u + v * v) <= 0.75 * wobble)


def _line_alpha(box: Box, p: tuple[float, float], q: tuple[float, float], width: float) -> Array:
    """A thick segment from p to q (y, x) of the given width."""
    ys, xs = grids(box, 2)
    d = np.array([q[0] - p[0], q[1] - p[1]])
    length2 = max(float(d @ d), 1e-6)
    t = np.clip(((ys - p[0]) * d[0] + (xs - p[1]) * d[1]) / length2, 0.0, 1.0)
    dist2 = (ys - p[0] - t * d[0]) ** 2 + (xs - p[1] - t * d[1]) ** 2
    return coverage(dist2 <= (width / 2) ** 2)


def _distractor_layer(rng: np.random.Generator, size: int, line: bool) -> Layer | None:
    """A background-labelled blob or line with a random (non-class-tied) texture."""
    if line:
        p = tuple(rng.uniform(0, size, 2))
        q = tuple(rng.uniform(0, size, 2))
        width = rng.uniform(1.5, max(2.0, size / 24))
        lo, hi = np.minimum(p, q) - width, np.maximum(p, q) + width
        box = (
            max(int(lo[0]), 0),
            min(int(math.ceil(hi[0])), size),
            max(int(lo[1]), 0),
            min(int(math.ceil(hi[1])), size),
        )
        if box[0] >= box[1] or box[2] >= box[3]:
            return None
        alpha = _line_alpha(box, p, q, width)
        centre = ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
    else:
        centre = (rng.uniform(0, size), rng.uniform(0, size))
        r = size * rng.uniform(0.1, 0.3)
        box = box_around(centre[1], centre[0], r * 1.3, size)
        if box is None:
            return None
        alpha = _blob_alpha(rng, box, centre, r)
    kind = ("plain", "stripes", "waves")[rng.integers(3)]
    period = max(size * rng.uniform(0.05, 0.16), MIN_PERIOD_PX)
    colour = _paint(rng, box, (kind, rng.uniform(0, math.pi), period), centre)
    return Layer(0, box, alpha, colour)


def _background(rng: np.random.Generator, size: int) -> Array:
    """Smooth random colour field + soft blobs + (sometimes) a faint random texture."""
    g = int(rng.integers(2, 6))
    canvas = bilinear_upsample(rng.uniform(0, 255, size=(g, g, 3)), size)
    ys = (np.arange(size, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(size, dtype=np.float32) + 0.5)[None, :]
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0, size, 2)
        sigma = size * rng.uniform(0.05, 0.2)
        weight = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
        canvas += weight[..., None] * (rng.uniform(0, 255, 3) - canvas) * rng.uniform(0.4, 0.9)
    if rng.random() < 0.5:
        kind = ("stripes", "waves", "checker")[rng.integers(3)]
        period = max(size * rng.uniform(0.05, 0.2), MIN_PERIOD_PX)
        t = _texture(kind, ys, xs, rng.uniform(0, math.pi), period, rng.uniform(0, 6.3), (0, 0))
        canvas += (t[..., None] - 0.5) * rng.uniform(-40, 40, 3)
    return canvas.astype(np.float32)


# --------------------------------------------------------------------------------------
# Composing one image


def _keeps_objects_visible(layers: list[Layer], areas: dict[int, int], size: int) -> bool:
    """True when every object keeps MIN_VISIBLE_FRACTION of its own area visible."""
    labels = label_map(layers, size)
    return all((labels == label).sum() >= MIN_VISIBLE_FRACTION * a for label, a in areas.items())


# Uniform in the central part of the image, or (half the time) overlapping a placed object.
PLACEMENT = Placement(overlap=0.5, distance=(0.45, 0.9), clip=(0.1, 0.9), spread=(0.15, 0.85))


def compose(rng: np.random.Generator, num_classes: int, size: int) -> tuple[Array, Array] | None:
    """Draw one candidate image and mask; None when a labelled object ends up too small."""
    canvas = _background(rng, size)
    layers: list[Layer] = []
    for _ in range(int(rng.integers(0, 4))):
        layer = _distractor_layer(rng, size, line=bool(rng.random() < 0.4))
        if layer is not None:
            layers.append(layer)

    num_objects = int(rng.integers(1, min(MAX_OBJECTS, num_classes) + 1))
    classes = rng.choice(num_classes, size=num_objects, replace=False)
    areas: dict[int, int] = {}
    placed: list[tuple[float, float, float]] = []
    for cls in classes:
        radius = max(size * rng.uniform(*RADIUS_RANGE), MIN_RADIUS_PX)
        for _ in range(MAX_PLACEMENT_TRIES):
            centre = object_centre(rng, size, placed, radius, PLACEMENT)
            layer = _object_layer(rng, int(cls), size, centre, radius)
            if layer is None:
                continue
            area = int((layer.alpha >= 0.5).sum())
            if area == 0:
                continue
            trial = {**areas, layer.label: area}
            if _keeps_objects_visible([*layers, layer], trial, size):
                layers.append(layer)
                areas = trial
                placed.append((centre[0], centre[1], radius))
                break
    # A distractor line may cross in front of objects, occluding them.
    if rng.random() < 0.3:
        layer = _distractor_layer(rng, size, line=True)
        if layer is not None and _keeps_objects_visible([*layers, layer], areas, size):
            layers.append(layer)

    draw_layers(canvas, layers)
    image = finish(rng, canvas)

    mask = ignore_band(label_map(layers, size))
    counts = np.bincount(mask.ravel(), minlength=256)
    if not areas or any(counts[label] < MIN_LABELLED_PIXELS for label in areas):
        return None
    return image, mask
