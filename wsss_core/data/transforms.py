"""Joint image/mask transforms on tensors: image float [3, H, W], mask int64 [H, W] or None.

Training augmentation (rescale, colour jitter, normalise, flip, pad and crop) and the
evaluation transform (resize, normalise). Their randomness comes from torch's global
generator, so ``torch.manual_seed`` (and DataLoader workers, which torch seeds per worker)
reproduce them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss_core.data.palette import IGNORE_INDEX

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Tensor = torch.Tensor
Sample = tuple[Tensor, Tensor | None]


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
