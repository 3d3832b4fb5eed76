"""PASCAL VOC 2012-layout datasets: splits, class names, images, masks and torch Datasets.

The same layout serves the real VOC 2012 tree and the synthetic dataset:
``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``,
``ImageSets/Segmentation/<split>.txt`` and ``classes.txt``.

Augmentations are joint image/mask transforms on torch tensors; their randomness comes
from torch's global generator, so ``torch.manual_seed`` (and DataLoader workers, which
torch seeds per worker) reproduce them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from wsss_core.palette import IGNORE_INDEX, load_mask

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
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Tensor = torch.Tensor
Sample = tuple[Tensor, Tensor | None]


# --------------------------------------------------------------------------------------
# Files of a dataset root


def split_path(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def image_path(root: str | os.PathLike, image_id: str) -> Path:
    return Path(root) / "JPEGImages" / f"{image_id}.jpg"


def mask_path(
    root: str | os.PathLike, image_id: str, mask_dir: str | os.PathLike | None = None
) -> Path:
    """Ground-truth mask path, or ``<mask_dir>/<id>.png`` when a mask directory is given.

    On a prepared VOC 2012 tree, ``SegmentationClassAug`` (VOC's own masks plus the SBD
    masks of train_aug) is preferred to ``SegmentationClass`` when it holds the id.
    """
    if mask_dir is not None:
        return Path(mask_dir) / f"{image_id}.png"
    augmented = Path(root) / "SegmentationClassAug" / f"{image_id}.png"
    if augmented.is_file():
        return augmented
    return Path(root) / "SegmentationClass" / f"{image_id}.png"


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Image ids of a split, one per line of ``ImageSets/Segmentation/<split>.txt``."""
    path = split_path(root, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"split file {path} not found: check the split name '{split}' and the dataset root, "
            "or re-run the data rule"
        )
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"split file {path} lists no images; re-run the data rule")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"split file {path} lists ids more than once: {duplicates[:5]}")
    return ids


def is_voc2012_tree(root: str | os.PathLike) -> bool:
    """True for a PASCAL VOC 2012 tree (JPEGImages, ImageSets and Annotations or masks)."""
    root = Path(root)
    return (
        (root / "JPEGImages").is_dir()
        and (root / "ImageSets").is_dir()
        and ((root / "Annotations").is_dir() or (root / "SegmentationClass").is_dir())
    )


def read_class_names(root: str | os.PathLike) -> list[str]:
    """Foreground class names in label order 1..K, from ``classes.txt``.

    A VOC 2012 tree without ``classes.txt`` has the 20 VOC classes.
    """
    path = Path(root) / "classes.txt"
    if not path.is_file():
        if is_voc2012_tree(root):
            return list(VOC_CLASSES)
        raise FileNotFoundError(
            f"{path} not found and {root} is not a VOC 2012 tree: write the class names there, "
            "one per line in label order, or re-run the data rule"
        )
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path} lists no class names; write one per line in label order")
    if len(set(names)) != len(names):
        raise ValueError(f"{path} lists a class name more than once: {names}")
    if "image_id" in names:
        raise ValueError(f"{path}: 'image_id' cannot be a class name")
    return names


def _fix_dataset_file(root: str | os.PathLike, image_id: str) -> str:
    """What to do about a missing or corrupt file of a dataset root, for error messages."""
    lists = Path(root) / "ImageSets" / "Segmentation"
    return (
        f"replace it (re-run the data rule for a dataset the workflow made), or remove "
        f"'{image_id}' from the split lists in {lists} and rerun"
    )


def load_image(root: str | os.PathLike, image_id: str) -> np.ndarray:
    """The RGB image of ``image_id`` as uint8 [H, W, 3].

    A missing or unreadable file (truncated, not an image) is an error that names it.
    """
    path = image_path(root, image_id)
    if not path.is_file():
        raise FileNotFoundError(
            f"image {path} not found; re-run the data rule, or remove '{image_id}' from the "
            f"split lists in {Path(root) / 'ImageSets' / 'Segmentation'}"
        )
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"cannot read image {path}: it is unreadable ({err}); "
            f"{_fix_dataset_file(root, image_id)}"
        ) from err


def check_mask_labels(mask: np.ndarray, num_classes: int, path: str | os.PathLike) -> np.ndarray:
    """``mask`` itself when every label is a class 0..num_classes-1 or 255 (ignore); else a
    ValueError naming the file ``path`` and the unknown labels."""
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise ValueError(
            f"mask {path} holds label(s) {bad.tolist()[:5]} that are neither a class "
            f"(0..{num_classes - 1}, background and the classes of classes.txt) nor ignore "
            f"({IGNORE_INDEX}); fix or replace the mask, or correct classes.txt"
        )
    return mask


def load_gt_mask(
    root: str | os.PathLike,
    image_id: str,
    mask_dir: str | os.PathLike | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """The label mask of ``image_id`` as uint8 [H, W] (ground truth, or from ``mask_dir``).

    With ``num_classes`` (C, background included) a label other than 0..C-1 and 255 is an
    error naming the file.
    """
    path = mask_path(root, image_id, mask_dir)
    if not path.is_file():
        if mask_dir is not None:
            raise FileNotFoundError(
                f"mask {path} not found; re-run the rule that writes {mask_dir}"
            )
        raise FileNotFoundError(f"mask {path} not found; {_fix_dataset_file(root, image_id)}")
    mask = load_mask(path)
    return mask if num_classes is None else check_mask_labels(mask, num_classes, path)


# --------------------------------------------------------------------------------------
# Joint image/mask transforms on tensors: image float [3, H, W], mask int64 [H, W] or None


def image_to_tensor(image: np.ndarray) -> Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in [0, 1]."""
    pixels = np.array(image, dtype=np.float32).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(pixels)).div_(255.0)


def mask_to_tensor(mask: np.ndarray) -> Tensor:
    """uint8 [H, W] -> int64 [H, W]."""
    return torch.from_numpy(np.array(mask, dtype=np.int64))


def _resize(image: Tensor, mask: Tensor | None, size: tuple[int, int]) -> Sample:
    """Bilinear image (antialiased when shrinking), nearest-neighbour mask."""
    if tuple(image.shape[-2:]) == size:
        return image, mask
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    image = F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )[0]
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0]
        mask = mask.long()
    return image, mask


class Compose:
    """Apply joint transforms in order."""

    def __init__(self, steps: Sequence) -> None:
        self.steps = list(steps)

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> Sample:
        for step in self.steps:
            image, mask = step(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return f"Compose({self.steps})"


class Resize:
    """Resize to a fixed (height, width)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> Sample:
        return _resize(image, mask, self.size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomRescale:
    """Rescale both sides by one factor drawn uniformly from ``scale_range``."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(lo), float(hi))

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> Sample:
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand(()))
        h, w = image.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        return _resize(image, mask, size)

    def __repr__(self) -> str:
        return f"RandomRescale({self.scale_range})"


def _grey(image: Tensor) -> Tensor:
    """ITU-R 601 luma of a [3, H, W] image, as [1, H, W]."""
    return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]


class ColourJitter:
    """Random brightness, contrast and saturation factors in [1 - s, 1 + s] (image only).

    Works on images in [0, 1] (before normalisation); the result is clamped to [0, 1].
    """

    def __init__(self, strength: float) -> None:
        if not 0 <= strength < 1:
            raise ValueError(f"colour jitter strength must be in [0, 1), got {strength}")
        self.strength = float(strength)

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> Sample:
        if self.strength == 0:
            return image, mask
        brightness, contrast, saturation = (1 + self.strength * (2 * torch.rand(3) - 1)).tolist()
        image = (image * brightness).clamp_(0, 1)
        mean = _grey(image).mean()
        image = ((image - mean) * contrast + mean).clamp_(0, 1)
        grey = _grey(image)
        image = ((image - grey) * saturation + grey).clamp_(0, 1)
        return image, mask

    def __repr__(self) -> str:
        return f"ColourJitter({self.strength})"


class Normalise:
    """(image - mean) / std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must be 3 values with std > 0, got {mean}, {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> Sample:
        return (image - self.mean) / self.std, mask

    def __repr__(self) -> str:
        return f"Normalise({self.mean.flatten().tolist()}, {self.std.flatten().tolist()})"


class RandomHorizontalFlip:
    """Mirror image and mask together with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> Sample:
        if float(torch.rand(())) < self.p:
            image = image.flip(-1)
            mask = mask.flip(-1) if mask is not None else None
        return image, mask

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.p})"


class RandomCrop:
    """Crop a random ``size`` x ``size`` window, padding first where the input is smaller.

    Padding goes right and bottom: the image with ``fill`` (0 after normalisation is the
    mean colour), the mask with IGNORE_INDEX.
    """

    def __init__(self, size: int, fill: float = 0.0) -> None:
        if size < 1:
            raise ValueError(f"crop size must be positive, got {size}")
        self.size = int(size)
        self.fill = float(fill)

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> Sample:
        h, w = image.shape[-2:]
        pad_h, pad_w = max(self.size - h, 0), max(self.size - w, 0)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=self.fill)
            if mask is not None:
                mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
            h, w = h + pad_h, w + pad_w
        top = int(torch.randint(0, h - self.size + 1, ()))
        left = int(torch.randint(0, w - self.size + 1, ()))
        image = image[:, top : top + self.size, left : left + self.size]
        if mask is not None:
            mask = mask[top : top + self.size, left : left + self.size]
        return image, mask

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


def train_transform(
    crop_size: int,
    scale_range: tuple[float, float] = (0.7, 1.3),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    jitter: float = 0.3,
    flip: bool = True,
) -> Compose:
    """Training augmentation: rescale, colour jitter, normalise, flip, pad and random crop."""
    steps: list = [RandomRescale(scale_range), ColourJitter(jitter), Normalise(mean, std)]
    if flip:
        steps.append(RandomHorizontalFlip(0.5))
    steps.append(RandomCrop(crop_size, fill=0.0))
    return Compose(steps)


def eval_transform(
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Evaluation: resize to a fixed square ``size`` (None keeps the size) and normalise."""
    steps: list = [] if size is None else [Resize(size)]
    steps.append(Normalise(mean, std))
    return Compose(steps)


# --------------------------------------------------------------------------------------
# Datasets


class VOCClassification(Dataset):
    """(image [3, H, W] float, labels [K] float) pairs of a split, labels from a label table."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        label_table_path: str | os.PathLike,
        transform: Compose | None = None,
    ) -> None:
        # Imported here: wsss_core.data.labels imports read_split/read_class_names from here.
        from wsss_core.data.labels import read_label_table

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
    (pseudo masks for training the segmenter).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        mask_dir: str | os.PathLike | None = None,
        transform: Compose | None = None,
    ) -> None:
        self.root = Path(root)
        self.ids = read_split(root, split)
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
