"""How far the random walk can take the relevance maps: the walk with the trained AffinityNet
against the same walk with ground-truth affinities.

For each image, three label maps are scored against the ground truth:

- ``relevance map``: the argmax of [(1 - max_c map_c)^alpha, maps...] at image size
  (``seeds.alpha_labels``), the maps the walk starts from;
- ``random walk``: ``walk_maps`` with the AffinityNet's features (what rule random_walk
  writes, without the CRF);
- ``random walk, ground-truth affinity``: ``walk_maps`` with ``label_features`` of the ground
  truth, so that the walk spreads every map exactly within its object and never across a
  border. This is the ceiling of any AffinityNet: where a map marks the wrong object or
  misses an object, no affinity can mend it.

The gap between the first two rows is the lift; between the last two, what better affinities
could still add; above the last row, only better maps help.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from wsss_core.affinity.net import AffinityNet, image_features
from wsss_core.cams.store import CamReader
from wsss_core.data.layout import load_gt_mask, load_image
from wsss_core.evaluate.masks import NO_GROUND_TRUTH, full_class_names
from wsss_core.evaluate.metrics import ConfusionMatrix
from wsss_core.seeds.labels import alpha_labels
from wsss_core.walk.walk import WalkParams, label_features, scores_to_mask, walk_maps

STAGES = ("relevance map", "random walk", "random walk, ground-truth affinity")


def ceiling_masks(
    maps: np.ndarray,
    classes: Sequence[int],
    gt: np.ndarray,
    features: torch.Tensor,
    walk: WalkParams,
) -> dict[str, np.ndarray]:
    """The three label maps of one image (uint8 [H, W], keys ``STAGES``).

    ``maps`` [K, H, W] are the image's relevance maps at image size, ``gt`` [H, W] its ground
    truth and ``features`` [D, h, w] its AffinityNet features.
    """
    if gt.shape != maps.shape[1:]:
        raise ValueError(f"ground truth {gt.shape} and maps {maps.shape[1:]} differ in size")
    classes = list(classes)
    maps_t = torch.from_numpy(maps).to(features.device)
    truth = label_features(torch.from_numpy(gt), tuple(features.shape[1:])).to(features)
    with torch.no_grad():
        walked = scores_to_mask(walk_maps(maps_t, features, walk.alpha, **walk.options()), classes)
        ceiling = scores_to_mask(walk_maps(maps_t, truth, walk.alpha, **walk.options()), classes)
    relevance = alpha_labels(maps, classes, walk.alpha)
    return dict(zip(STAGES, (relevance, walked.cpu().numpy(), ceiling.cpu().numpy()), strict=True))


def walk_ceiling(
    store_path: str | os.PathLike,
    net: AffinityNet,
    net_info: Mapping[str, Any],
    data_root: str | os.PathLike,
    num_classes: int,
    walk: WalkParams,
    ids: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, ConfusionMatrix]:
    """Confusion matrices of the three stages over ``ids`` (default: every image of the store)."""
    cms = {stage: ConfusionMatrix(num_classes) for stage in STAGES}
    with CamReader(store_path) as reader:
        ids = list(reader.ids() if ids is None else ids)
        if not ids:
            raise ValueError(f"{store_path}: no image ids to evaluate")
        for image_id in tqdm(ids, desc="walk ceiling", disable=not progress):
            maps, classes = reader.upsampled(image_id)
            gt = load_gt_mask(data_root, image_id, num_classes=num_classes)
            with torch.no_grad():
                features = image_features(net, load_image(data_root, image_id), net_info, device)
            for stage, mask in ceiling_masks(maps, classes, gt, features, walk).items():
                cms[stage].update(mask, gt)
    return cms


def ceiling_table(cms: Mapping[str, ConfusionMatrix], class_names: Sequence[str]) -> pd.DataFrame:
    """One row per stage: mIoU, then the IoU of every class (background first), in percent."""
    rows = []
    for stage, cm in cms.items():
        scores = cm.scores()
        names = full_class_names(class_names, cm.num_classes)
        rows.append(
            {"stage": stage, "mIoU": 100 * scores.miou}
            | {name: 100 * iou for name, iou in zip(names, scores.iou, strict=True)}
        )
    return pd.DataFrame(rows)


def no_ground_truth_table(class_names: Sequence[str]) -> pd.DataFrame:
    """The rows and columns of ``ceiling_table`` for a split without ground truth, with
    ``no ground truth`` in every score cell."""
    columns = ["mIoU", "background", *class_names]
    return pd.DataFrame([{"stage": stage} | dict.fromkeys(columns, NO_GROUND_TRUTH)
                         for stage in STAGES])  # fmt: skip
