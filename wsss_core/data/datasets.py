"""torch Datasets of a split: images with their image-level labels (classifier) or with
their masks (AffinityNet on seeds, segmenter on pseudo masks)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from wsss_core.data.labels import read_label_table
from wsss_core.data.layout import image_path, load_gt_mask, load_image, mask_path, read_split
from wsss_core.data.transforms import Compose, eval_transform, image_to_tensor, mask_to_tensor

Tensor = torch.Tensor


class VOCClassification(Dataset):
    """(image [3, H, W] float, labels [K] float) pairs of a split, labels from a label table."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        label_table_path: str | os.PathLike,
        transform: Compose | None = None,
    ) -> None:
        self.root = Path(root)
        self.ids = read_split(root, split)
        table_ids, self.class_names, labels = read_label_table(label_table_path)
        row = {image_id: i for i, image_id in enumerate(table_ids)}
        missing = [i for i in self.ids if i not in row]
        if missing:
            raise ValueError(
                f"label table {label_table_path} has no row for {len(missing)} ids of split "
                f"'{split}' (first: {missing[:3]}); re-run make_labels for this split"
            )
        self.labels = labels[[row[i] for i in self.ids]]
        self.transform = transform if transform is not None else eval_transform(None)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = image_to_tensor(load_image(self.root, self.ids[index]))
        image, _ = self.transform(image, None)
        return image, torch.from_numpy(self.labels[index].copy())


class VOCSegmentation(Dataset):
    """(image [3, H, W] float, mask [H, W] int64 with 255 ignore) pairs of a split.

    Masks come from ``SegmentationClass`` or, given ``mask_dir``, from ``<mask_dir>/<id>.png``
    (pseudo masks for training the segmenter). ``ids`` keeps only those images of the split
    (in their order), e.g. a validation sample.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        mask_dir: str | os.PathLike | None = None,
        transform: Compose | None = None,
        ids: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.ids = read_split(root, split)
        if ids is not None:
            unknown = sorted(set(ids) - set(self.ids))
            if unknown:
                raise ValueError(f"ids {unknown[:3]} are not in split '{split}' of {root}")
            self.ids = list(ids)
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        self.transform = transform if transform is not None else eval_transform(None)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_id = self.ids[index]
        image = load_image(self.root, image_id)
        mask = load_gt_mask(self.root, image_id, self.mask_dir)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask {mask_path(self.root, image_id, self.mask_dir)} is {mask.shape[1]}x"
                f"{mask.shape[0]} but image {image_path(self.root, image_id)} is "
                f"{image.shape[1]}x{image.shape[0]}; re-create the mask"
            )
        image_t, mask_t = self.transform(image_to_tensor(image), mask_to_tensor(mask))
        return image_t, mask_t
