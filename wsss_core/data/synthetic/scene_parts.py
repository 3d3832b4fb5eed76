"""Parts of the ``scenes`` family: class silhouettes, class textures, 1/f noise.

Silhouettes are inside tests in the object's unit frame (u right, v down), unions and
differences of primitives (discs, rectangles, thick segments, half-planes), each inside the
unit disc. Textures are values in [0, 1] that blend a surface's two colours; none of them is
the oriented stripes of the ``shapes`` family, and their orientation is random (not tied to
the class).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from wsss_core.data.synthetic.compose import Array

# --------------------------------------------------------------------------------------
# Primitives


def rect(u: Array, v: Array, u0: float, u1: float, v0: float, v1: float) -> Array:
    """Inside the axis-aligned rectangle [u0, u1] x [v0, v1]."""
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def disc(u: Array, v: Array, cu: float, cv: float, r: float) -> Array:
    """Inside the disc of radius ``r`` around (cu, cv)."""
    return (u - cu) ** 2 + (v - cv) ** 2 <= r * r


def segment_distance(u: Array, v: Array, p: tuple[float, float], q: tuple[float, float]) -> Array:
    """Distance from (u, v) to the segment from p to q (both (u, v) points)."""
    du, dv = q[0] - p[0], q[1] - p[1]
    length2 = max(du * du + dv * dv, 1e-12)
    t = np.clip(((u - p[0]) * du + (v - p[1]) * dv) / length2, 0.0, 1.0)
    return np.sqrt((u - p[0] - t * du) ** 2 + (v - p[1] - t * dv) ** 2)


def polyline(u: Array, v: Array, points: Sequence[tuple[float, float]], half_width: float) -> Array:
    """Inside the thick polyline through ``points`` (a stroke of the given half width)."""
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for p, q in zip(points[:-1], points[1:], strict=True):
        inside |= segment_distance(u, v, p, q) <= half_width
    return inside


# --------------------------------------------------------------------------------------
# Silhouettes: every one fits the unit disc (upright; the object is then rotated a little).


def _tree(u: Array, v: Array) -> Array:
    """A round canopy on a trunk."""
    return disc(u, v, 0.0, -0.3, 0.55) | rect(u, v, -0.13, 0.13, 0.1, 0.92)


def _house(u: Array, v: Array) -> Array:
    """A square body under a wider triangular roof, with a door cut out."""
    body = rect(u, v, -0.55, 0.55, -0.05, 0.75)
    roof = (v <= -0.05) & (np.abs(u) <= 0.75 * (v + 0.85) / 0.8)
    door = rect(u, v, -0.14, 0.14, 0.35, 0.8)
    return (body | roof) & ~door


def _ladder(u: Array, v: Array) -> Array:
    """Two rails and three rungs: thin structures."""
    inside = rect(u, v, -0.52, -0.3, -0.84, 0.84) | rect(u, v, 0.3, 0.52, -0.84, 0.84)
    for c in (-0.5, 0.0, 0.5):
        inside |= rect(u, v, -0.4, 0.4, c - 0.09, c + 0.09)
    return inside


def _dumbbell(u: Array, v: Array) -> Array:
    """Two discs joined by a bar: elongated."""
    bells = disc(u, v, -0.62, 0.0, 0.3) | disc(u, v, 0.62, 0.0, 0.3)
    return bells | rect(u, v, -0.62, 0.62, -0.1, 0.1)


def _flower(u: Array, v: Array) -> Array:
    """Six petals around a centre."""
    inside = disc(u, v, 0.0, 0.0, 0.38)
    for k in range(6):
        a = k * math.pi / 3
        inside |= disc(u, v, 0.6 * math.cos(a), 0.6 * math.sin(a), 0.25)
    return inside


def _fork(u: Array, v: Array) -> Array:
    """A handle, a crossbar and three prongs."""
    inside = rect(u, v, -0.08, 0.08, 0.0, 0.95) | rect(u, v, -0.47, 0.47, -0.08, 0.08)
    for c in (-0.4, 0.0, 0.4):
        inside |= rect(u, v, c - 0.07, c + 0.07, -0.82, 0.0)
    return inside


def _mushroom(u: Array, v: Array) -> Array:
    """A half-elliptic cap on a widening stem."""
    cap = ((u / 0.85) ** 2 + ((v + 0.05) / 0.62) ** 2 <= 1.0) & (v <= -0.05)
    stem = (v >= -0.05) & (v <= 0.8) & (np.abs(u) <= 0.18 + 0.08 * (v + 0.05) / 0.85)
    return cap | stem


def _snowman(u: Array, v: Array) -> Array:
    """Three stacked discs, growing downwards."""
    return disc(u, v, 0.0, -0.62, 0.2) | disc(u, v, 0.0, -0.17, 0.28) | disc(u, v, 0.0, 0.48, 0.4)


def _zigzag(u: Array, v: Array) -> Array:
    """A thick zigzag stroke: elongated and thin."""
    points = [(-0.8, 0.3), (-0.4, -0.3), (0.0, 0.3), (0.4, -0.3), (0.8, 0.3)]
    return polyline(u, v, points, 0.11)


def _sailboat(u: Array, v: Array) -> Array:
    """A hull, a mast and two triangular sails."""
    hull = (v >= 0.35) & (v <= 0.62) & (np.abs(u) <= 0.85 - 0.9 * (v - 0.35))
    mast = rect(u, v, -0.05, 0.05, -0.9, 0.35)
    main = (u >= 0.05) & (v <= 0.25) & ((u - 0.05) * 1.1 <= 0.6 * (v + 0.85))
    jib = (u <= -0.05) & (v <= 0.15) & ((-0.05 - u) <= 0.35 * (v + 0.7))
    return hull | mast | main | jib


ShapeFn = Callable[[Array, Array], Array]

# Class order: label 1 is the first. The first five (the demo's) mix compact and thin ones.
SILHOUETTES: dict[str, ShapeFn] = {
    "tree": _tree,
    "house": _house,
    "ladder": _ladder,
    "dumbbell": _dumbbell,
    "flower": _flower,
    "fork": _fork,
    "mushroom": _mushroom,
    "snowman": _snowman,
    "zigzag": _zigzag,
    "sailboat": _sailboat,
}


# --------------------------------------------------------------------------------------
# Textures


def _frac_distance(z: Array) -> Array:
    """Distance from z to the nearest integer, in [0, 0.5]."""
    return np.abs(z - np.rint(z))


def _soft(signed: Array) -> Array:
    """A 1-pixel soft step: 1 where ``signed`` (a distance in pixels) is well below 0."""
    return np.clip(0.5 - signed, 0.0, 1.0)


def _value_noise(rng: np.random.Generator, ys: Array, xs: Array, period: float) -> Array:
    """Smooth random values in [0, 1]: a random lattice of spacing ``period``, bilinear."""
    gy, gx = ys / period, xs / period
    y0, x0 = np.floor(gy.min()), np.floor(gx.min())
    ny = int(np.floor(gy.max()) - y0) + 2
    nx = int(np.floor(gx.max()) - x0) + 2
    lattice = rng.random((ny, nx))
    fy, fx = gy - y0, gx - x0
    iy, ix = np.floor(fy).astype(int), np.floor(fx).astype(int)
    ty, tx = fy - iy, fx - ix
    top = lattice[iy, ix] * (1 - tx) + lattice[iy, ix + 1] * tx
    bottom = lattice[iy + 1, ix] * (1 - tx) + lattice[iy + 1, ix + 1] * tx
    return top * (1 - ty) + bottom * ty


def texture(
    kind: str,
    rng: np.random.Generator,
    ys: Array,
    xs: Array,
    period: float,
    angle: float,
    centre: tuple[float, float],
    radius: float,
) -> Array:
    """Evaluate a texture on pixel-centre coordinates (image frame), with a random phase.

    ``period`` is in pixels, ``angle`` (radians) the orientation of the pattern's axes;
    ``centre`` and ``radius`` are the object's (for the textures that follow it: concentric,
    rays, gradient).
    """
    offset = rng.uniform(0, 1, 2)
    c, s = math.cos(angle), math.sin(angle)
    a = (xs * c + ys * s) / period + offset[0]  # in periods
    b = (-xs * s + ys * c) / period + offset[1]
    cy, cx = centre
    shape = np.broadcast_shapes(ys.shape, xs.shape)
    if kind == "polka":  # round dots on a square lattice
        d = np.sqrt(_frac_distance(a) ** 2 + _frac_distance(b) ** 2)
        t = _soft((d - 0.3) * period)
    elif kind == "checker":
        t = np.clip(0.5 + 2.0 * np.sin(2 * math.pi * a) * np.sin(2 * math.pi * b), 0.0, 1.0)
    elif kind == "blotches":  # thresholded smooth noise: irregular two-colour patches
        n = _value_noise(rng, np.broadcast_to(ys, shape), np.broadcast_to(xs, shape), period)
        t = np.clip(0.5 + 6.0 * (n - 0.5), 0.0, 1.0)
    elif kind == "concentric":  # rings around the object's centre
        r = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2) / period + offset[0]
        t = _soft((_frac_distance(r) - 0.25) * period)
    elif kind == "gradient":  # a ramp across the object from one colour to the other
        t = np.clip(0.5 + ((xs - cx) * c + (ys - cy) * s) / (2 * radius), 0.0, 1.0)
    elif kind == "bricks":  # running bond: mortar lines, every other row shifted
        row = np.floor(2 * b)
        along = a + 0.5 * np.mod(row, 2)
        mortar = np.minimum(_frac_distance(2 * b) * period / 2, _frac_distance(along) * period)
        t = _soft(mortar - 0.8)
    elif kind == "grid":  # thin lines in two directions
        d = np.minimum(_frac_distance(a), _frac_distance(b)) * period
        t = _soft(d - 0.8)
    elif kind == "speckle":  # fine random grain
        t = rng.random(shape)
    elif kind == "chevron":  # zigzag bands
        z = a + 0.8 * np.abs(2 * (b - np.floor(b)) - 1)
        t = _soft((_frac_distance(z) - 0.25) * period)
    elif kind == "rays":  # sectors around the object's centre
        count = max(4, round(2 * math.pi * radius / (1.3 * period)))
        theta = np.arctan2(ys - cy, xs - cx) * count / (2 * math.pi) + offset[0]
        t = _soft((_frac_distance(theta) - 0.25) * 4.0)
    elif kind == "stripes":  # clutter only: plain oriented stripes
        t = _soft((_frac_distance(a) - 0.25) * period)
    elif kind == "plain":
        t = np.zeros(shape)
    else:
        raise ValueError(f"unknown texture kind '{kind}'")
    return np.broadcast_to(t, shape).astype(np.float32)


# One texture per class, in the order of SILHOUETTES: its kind, its period as a fraction of the
# image side (as in the shapes family: the same in pixels on small and large objects, so that
# small ones keep a legible texture) and its orientation in degrees (jittered), both tied to the
# class; some kinds use neither (blotches and speckle have no axes, rays and concentric follow
# the object's centre, gradient spans the object).
CLASS_TEXTURES: tuple[tuple[str, float, float], ...] = (
    ("checker", 0.09, 0.0),
    ("bricks", 0.1, 0.0),
    ("speckle", 0.1, 0.0),
    ("grid", 0.08, 45.0),
    ("rays", 0.07, 0.0),
    ("gradient", 0.1, 90.0),
    ("polka", 0.08, 45.0),
    ("concentric", 0.07, 0.0),
    ("blotches", 0.08, 0.0),
    ("chevron", 0.09, 90.0),
)
# Clutter: no class texture, nor anything close (wavy bands would pass for chevrons).
CLUTTER_TEXTURES = ("plain", "stripes", "mottled")


# --------------------------------------------------------------------------------------
# 1/f noise


def pink_noise(rng: np.random.Generator, shape: tuple[int, int], exponent: float) -> Array:
    """A random field whose amplitude spectrum falls as 1/f**exponent, zero mean, unit std."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    spectrum = np.fft.rfft2(white) / f**exponent
    spectrum[0, 0] = 0.0  # zero mean
    field = np.fft.irfft2(spectrum, s=shape)
    return (field / max(float(field.std()), 1e-12)).astype(np.float32)
