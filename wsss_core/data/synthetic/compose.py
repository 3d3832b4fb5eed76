"""What every synthetic family shares: layers, their rasterisation, the mask and its ignore band.

A layer is one drawn element: a soft coverage (alpha) and colours over a clipped bounding box,
with a class label (1..K) or 0 for clutter. Layers are drawn in order, later ones occluding
earlier ones; the mask is what is visible (each pixel takes the label of the topmost layer
covering at least half of it) with a 255 band along every label boundary, as in VOC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsss_core.data.palette import IGNORE_INDEX

Array = np.ndarray
Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (pixels, end exclusive)

# An earlier object must keep at least this fraction of its area visible.
MIN_VISIBLE_FRACTION = 0.45
# A labelled object must keep at least this many non-ignore pixels in the mask.
MIN_LABELLED_PIXELS = 6
# Two colours of one surface are at least this far apart in RGB.
MIN_COLOUR_DISTANCE = 80.0


@dataclass
class Layer:
    """One drawn element; ``label`` is a class label (1..K) or 0 for a distractor."""

    label: int
    box: Box
    alpha: Array  # [h, w] coverage in [0, 1]
    colour: Array  # [h, w, 3] float


def box_around(cx: float, cy: float, extent: float, size: int) -> Box | None:
    """Pixel box of the square of half-side ``extent`` around (cx, cy), clipped; None if empty."""
    y0, y1 = max(int(math.floor(cy - extent)), 0), min(int(math.ceil(cy + extent)), size)
    x0, x1 = max(int(math.floor(cx - extent)), 0), min(int(math.ceil(cx + extent)), size)
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, y1, x0, x1


def grids(box: Box, factor: int) -> tuple[Array, Array]:
    """Sample-centre coordinates (pixels) over a box, ``factor`` samples per pixel side."""
    y0, y1, x0, x1 = box
    ys = (np.arange(y0 * factor, y1 * factor, dtype=np.float32) + 0.5) / factor
    xs = (np.arange(x0 * factor, x1 * factor, dtype=np.float32) + 0.5) / factor
    return ys[:, None], xs[None, :]


def coverage(inside: Array) -> Array:
    """Average 2x2 supersampled inside tests into a per-pixel coverage."""
    h, w = inside.shape[0] // 2, inside.shape[1] // 2
    return inside.reshape(h, 2, w, 2).mean(axis=(1, 3), dtype=np.float32)


def bilinear_upsample(grid: Array, size: int) -> Array:
    """Upsample a [g, g, C] grid to [size, size, C] with separable linear interpolation."""
    g = grid.shape[0]
    pos = (np.arange(size) + 0.5) * g / size - 0.5
    weights = np.stack([np.interp(pos, np.arange(g), np.eye(g)[i]) for i in range(g)], axis=1)
    return np.einsum("yi,ijc,xj->yxc", weights, grid, weights)


def random_colours(rng: np.random.Generator) -> tuple[Array, Array]:
    """Two RGB colours, uniform in the cube, at least 80 apart (same law for every class)."""
    while True:
        c1, c2 = rng.uniform(0, 255, size=(2, 3))
        if np.linalg.norm(c1 - c2) >= MIN_COLOUR_DISTANCE:
            return c1, c2


def label_map(layers: list[Layer], size: int) -> Array:
    """Labels of what is visible: each pixel takes the topmost layer covering half of it."""
    labels = np.zeros((size, size), dtype=np.uint8)
    for layer in layers:
        y0, y1, x0, x1 = layer.box
        region = labels[y0:y1, x0:x1]
        region[layer.alpha >= 0.5] = layer.label
    return labels


def owner_map(layers: list[Layer], size: int) -> Array:
    """Index of the topmost layer covering half of each pixel (-1 where none does)."""
    owner = np.full((size, size), -1, dtype=np.int32)
    for index, layer in enumerate(layers):
        y0, y1, x0, x1 = layer.box
        owner[y0:y1, x0:x1][layer.alpha >= 0.5] = index
    return owner


def ignore_band(labels: Array) -> Array:
    """Mark pixels next to a different label (4-neighbourhood) as IGNORE_INDEX.

    Both sides of a boundary are marked, so the band is two pixels wide.
    """
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    out = labels.copy()
    out[edge] = IGNORE_INDEX
    return out


def draw_layers(canvas: Array, layers: list[Layer]) -> None:
    """Alpha-blend ``layers`` onto the float canvas [S, S, 3] in order, in place."""
    for layer in layers:
        y0, y1, x0, x1 = layer.box
        a = layer.alpha[..., None]
        canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + layer.colour * a


def finish(rng: np.random.Generator, canvas: Array) -> Array:
    """Add sensor noise (standard deviation 2..8) and round to an RGB uint8 image."""
    canvas += rng.normal(0.0, rng.uniform(2.0, 8.0), size=canvas.shape)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Placement:
    """Where a family puts an object's centre: with probability ``overlap`` next to a placed
    object (at ``distance`` x the sum of both radii, clipped to ``clip`` x the side), else
    uniform in ``spread`` x the side (both as [low, high] fractions of the side)."""

    overlap: float
    distance: tuple[float, float]
    clip: tuple[float, float]
    spread: tuple[float, float]


def object_centre(
    rng: np.random.Generator,
    size: int,
    placed: list[tuple[float, float, float]],
    radius: float,
    placement: Placement,
) -> tuple[float, float]:
    """The centre (y, x) of the next object, drawn as ``placement`` says."""
    if placed and rng.random() < placement.overlap:
        py, px, pr = placed[int(rng.integers(len(placed)))]
        direction = rng.uniform(0, 2 * math.pi)
        dist = (pr + radius) * rng.uniform(*placement.distance)
        low, high = placement.clip[0] * size, placement.clip[1] * size
        cy = float(np.clip(py + dist * math.sin(direction), low, high))
        cx = float(np.clip(px + dist * math.cos(direction), low, high))
        return cy, cx
    return tuple(rng.uniform(placement.spread[0] * size, placement.spread[1] * size, 2))
