"""What is specific to PASCAL VOC 2012: its 20 foreground classes, in label order 1..20.

A VOC 2012 tree without ``classes.txt`` has these classes (``layout.read_class_names``).
"""

from __future__ import annotations

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
