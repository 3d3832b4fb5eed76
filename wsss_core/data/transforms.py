"""Joint image/mask transforms (torchvision.transforms.v2): image float [3, H, W] in [0, 1],
mask int64 [H, W] (255 = ignore) or None.

Training augmentation: rescale, colour jitter, normalise, flip, pad and crop; evaluation:
resize and normalise. The image travels as ``tv_tensors.Image`` and the mask as
``tv_tensors.Mask``, so every geometric step moves both alike and colour steps touch the
image only. Randomness comes from torch's global generator: ``torch.manual_seed`` (and
DataLoader workers, which torch seeds per worker from the loader's generator) reproduce it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

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


class Compose:
    """A v2 pipeline called as ``(image, mask or None) -> (image, mask or None)`` on plain
    tensors (the tv_tensors wrapping stays inside)."""

    def __init__(self, steps: Sequence[v2.Transform]) -> None:
        self.pipeline = v2.Compose(list(steps))

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> Sample:
        if mask is None:
            return self.pipeline(tv_tensors.Image(image)).as_subclass(Tensor), None
        image, mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(Tensor), mask.as_subclass(Tensor)

    def __repr__(self) -> str:
        return repr(self.pipeline)


class Rescale(v2.Transform):
    """Resize to a fixed (height, width), or scale both sides by one factor drawn uniformly
    from ``scale_range``: images bilinear (antialiased when shrinking), masks nearest-exact.

    ``v2.Resize`` would give masks plain nearest, which samples half a pixel off the
    bilinear image; nearest-exact keeps labels on the pixels they came from."""

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        scale_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        if (size is None) == (scale_range is None):
            raise ValueError("give either a size or a scale_range")
        if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.size, self.scale_range = size, scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        if self.scale_range is None:
            return {"size": list(self.size)}
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand(()))
        return {"size": [max(1, round(h * scale)), max(1, round(w * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        size, old = params["size"], F.get_size(inpt)
        if old == size:
            return inpt
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, size, InterpolationMode.NEAREST_EXACT)
        shrink = size[0] < old[0] or size[1] < old[1]
        return F.resize(inpt, size, InterpolationMode.BILINEAR, antialias=shrink)


class PadTo(v2.Transform):
    """Pad right and bottom up to ``size`` x ``size``: images with ``fill`` (0 after
    normalisation is the mean colour), masks with IGNORE_INDEX."""

    def __init__(self, size: int, fill: float = 0.0) -> None:
        super().__init__()
        self.size, self.fill = size, fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        return {"padding": [0, 0, max(self.size - w, 0), max(self.size - h, 0)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = IGNORE_INDEX if isinstance(inpt, tv_tensors.Mask) else self.fill
        return self._call_kernel(F.pad, inpt, params["padding"], fill=fill)


def _normalize(mean: Sequence[float], std: Sequence[float]) -> v2.Normalize:
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std must be 3 values with std > 0, got {mean}, {std}")
    return v2.Normalize([float(m) for m in mean], [float(s) for s in std])


def train_transform(
    crop_size: int,
    scale_range: tuple[float, float] = (0.7, 1.3),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    jitter: float = 0.3,
    flip: bool = True,
) -> Compose:
    """Training augmentation: rescale by a factor in ``scale_range``; brightness, contrast
    and saturation factors in [1 - jitter, 1 + jitter] (in random order); normalise;
    mirror with probability 0.5; pad right/bottom to ``crop_size`` and crop a random
    ``crop_size`` square."""
    if crop_size < 1:
        raise ValueError(f"crop size must be positive, got {crop_size}")
    if not 0 <= jitter < 1:
        raise ValueError(f"colour jitter strength must be in [0, 1), got {jitter}")
    lo, hi = scale_range
    steps: list[v2.Transform] = [Rescale(scale_range=(float(lo), float(hi)))]
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    steps.append(_normalize(mean, std))
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps += [PadTo(crop_size, fill=0.0), v2.RandomCrop(crop_size)]
    return Compose(steps)


def eval_transform(
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Evaluation: resize to a fixed square ``size`` (None keeps the size) and normalise."""
    steps: list[v2.Transform] = [] if size is None else [Rescale(size=(size, size))]
    steps.append(_normalize(mean, std))
    return Compose(steps)
