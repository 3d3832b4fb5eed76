"""A synthetic dataset in PASCAL VOC 2012 layout, in one of two families (styles).

``shapes`` (compose.py + shapes.py): textured geometric shapes on smooth cluttered
backgrounds. ``scenes`` (scenes.py + scene_parts.py): silhouettes built from unions of
primitives (elongated, non-convex, thin), other textures, on photo-like backgrounds (1/f
noise, gradients, a horizon, textured clutter), more objects per image, small ones too.
In both, colour never tells the class: shape and texture do. The mask is what is visible
(the topmost layer covering half a pixel labels it) with a 255 ignore band along every label
boundary; images are JPEG-compressed. dataset.py writes the VOC layout.
"""

from wsss_core.data.synthetic.compose import Layer, ignore_band, label_map
from wsss_core.data.synthetic.dataset import (
    DEFAULT_STYLE,
    FAMILIES,
    MIN_IMAGE_SIZE,
    STYLES,
    check_args,
    class_names,
    generate_dataset,
    image_id,
    max_classes,
    render_image,
    save_jpeg,
)
from wsss_core.data.synthetic.shapes import MAX_CLASSES, SHAPES

__all__ = [
    "DEFAULT_STYLE",
    "FAMILIES",
    "MAX_CLASSES",
    "MIN_IMAGE_SIZE",
    "SHAPES",
    "STYLES",
    "Layer",
    "check_args",
    "class_names",
    "generate_dataset",
    "ignore_band",
    "image_id",
    "label_map",
    "max_classes",
    "render_image",
    "save_jpeg",
]
