"""HDF5 store of relevance maps: one group per image id, one store per method.

Layout of a store (``cams/<method>.h5``)::

    /                     attrs: method, format ("wsss-cam-store"), version
    /<image_id>/maps      float16 [K, h, w], chunked per class, gzip + shuffle
    /<image_id>           attrs: classes int64 [K], image_size int64 [2] (H, W),
                                 scales float64 [K], method

float16 keeps 11 significant bits but a narrow range (about 6e-5 .. 65504), while raw
relevance may be far smaller or larger; each class map is therefore stored divided by its
largest absolute value, and that factor is kept in ``scales`` (``raw()`` multiplies it
back). Stores are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from wsss_core.cli import UserError
from wsss_core.data.layout import load_image
from wsss_core.io import atomic_path

FORMAT = "wsss-cam-store"
VERSION = 1


class MissingImageError(UserError, KeyError):
    """An image id a store does not hold: a KeyError, and an expected error for the scripts."""

    def __str__(self) -> str:  # KeyError quotes its message; this is a sentence
        return str(self.args[0]) if self.args else ""


def _open_store(path: Path, what_to_do: str) -> h5py.File:
    """Open an HDF5 store for reading; a damaged file is an error naming it."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"cannot open cam store {path} ({err}); {what_to_do}") from err


@dataclass
class CamRecord:
    """The relevance maps of one image."""

    image_id: str
    maps: np.ndarray  # [K, h, w] float32
    classes: list[int]
    image_size: tuple[int, int]  # (H, W) of the original image


def _check_record(record: CamRecord) -> np.ndarray:
    """Validate a record; return its maps as float64 [K, h, w]."""
    image_id = record.image_id
    if not isinstance(image_id, str) or not image_id or "/" in image_id or image_id == ".":
        raise ValueError(f"image id {image_id!r} cannot name an HDF5 group (empty, '.' or has '/')")
    maps = np.asarray(record.maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps of '{image_id}' must be [K, h, w], got shape {maps.shape}")
    if maps.shape[0] != len(record.classes):
        raise ValueError(f"'{image_id}' has {maps.shape[0]} maps but {len(record.classes)} classes")
    if len(set(record.classes)) != len(record.classes) or any(c < 0 for c in record.classes):
        raise ValueError(f"classes of '{image_id}' must be distinct and >= 0: {record.classes}")
    if min(maps.shape[1:]) < 1:
        raise ValueError(f"maps of '{image_id}' have an empty grid {maps.shape[1:]}")
    if not np.isfinite(maps).all():
        raise ValueError(f"maps of '{image_id}' hold NaN or infinite values")
    if len(record.image_size) != 2 or min(record.image_size) < 1:
        raise ValueError(f"image size of '{image_id}' must be (H, W) > 0, got {record.image_size}")
    return maps


def _write_record(h5: h5py.File, record: CamRecord, method: str) -> None:
    maps = _check_record(record)
    if record.image_id in h5:
        raise ValueError(f"image id '{record.image_id}' is written twice")
    scales = np.abs(maps).max(axis=(1, 2)) if maps.shape[0] else np.zeros(0)
    scales = np.where(scales > 0, scales, 1.0)
    stored = (maps / scales[:, None, None]).astype(np.float16)
    group = h5.create_group(record.image_id)
    if maps.shape[0]:
        group.create_dataset(
            "maps",
            data=stored,
            chunks=(1,) + stored.shape[1:],
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
    else:
        group.create_dataset("maps", data=stored)
    group.attrs["classes"] = np.asarray(record.classes, dtype=np.int64)
    group.attrs["image_size"] = np.asarray(record.image_size, dtype=np.int64)
    group.attrs["scales"] = scales.astype(np.float64)
    group.attrs["method"] = method


def _set_root_attrs(h5: h5py.File, method: str) -> None:
    h5.attrs["method"] = method
    h5.attrs["format"] = FORMAT
    h5.attrs["version"] = VERSION


def write_store(path: str | os.PathLike, records: Iterable[CamRecord], method: str) -> None:
    """Write ``records`` to the store ``path`` (atomically: nothing at ``path`` on error).

    ``records`` may be a generator computing the maps lazily; an exception it raises
    leaves no file behind.
    """
    if not method:
        raise ValueError("a cam store needs a method name")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            _set_root_attrs(h5, method)
            for record in records:
                _write_record(h5, record, method)


def _store_method(h5: h5py.File, path: Path) -> str:
    if h5.attrs.get("format") != FORMAT or "method" not in h5.attrs:
        raise ValueError(
            f"{path} is not a cam store (no '{FORMAT}' attributes); re-run extract_cams"
        )
    return str(h5.attrs["method"])


def merge_stores(shard_paths: Iterable[str | os.PathLike], out_path: str | os.PathLike) -> int:
    """Gather shard stores into ``out_path`` (atomic). Returns the number of images.

    Every shard must hold the same method; an image id found in two shards is an error.
    """
    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("no shard stores to merge")
    owner: dict[str, Path] = {}
    method = None
    for shard in shard_paths:
        if not shard.is_file():
            raise FileNotFoundError(f"shard store {shard} is missing; rerun its extract_cams job")
        with _open_store(shard, "delete it and rerun its extract_cams job") as h5:
            shard_method = _store_method(h5, shard)
            if method is not None and shard_method != method:
                raise ValueError(
                    f"{shard} holds method '{shard_method}' but {shard_paths[0]} holds '{method}'"
                )
            method = shard_method
            for image_id in h5:
                if image_id in owner:
                    raise ValueError(
                        f"image id '{image_id}' is in both {owner[image_id]} and {shard}"
                    )
                owner[image_id] = shard
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w") as out:
            _set_root_attrs(out, method)
            for shard in shard_paths:
                with h5py.File(shard, "r") as h5:
                    for image_id in h5:
                        h5.copy(h5[image_id], out, name=image_id)
    return len(owner)


def upsample_normalise(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize [K, h, w] to ``size`` (half-pixel centres), then scale each map to [0, 1].

    Negative values become 0 and each map is divided by its maximum; a map whose maximum
    is <= 0 stays all zero.
    """
    height, width = int(size[0]), int(size[1])
    if maps.shape[0] == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
    if tuple(tensor.shape[-2:]) != (height, width):
        tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    up = tensor[0].clamp(min=0).numpy()
    peak = up.reshape(up.shape[0], -1).max(axis=1)
    safe = np.where(peak > 0, peak, 1.0)
    return np.where(peak[:, None, None] > 0, up / safe[:, None, None], 0.0).astype(np.float32)


class CamReader:
    """Read one store: ``with CamReader(path) as reader: maps, classes = reader.upsampled(id)``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"cam store {self.path} not found; run extract_cams and gather_cams"
            )
        self._h5 = _open_store(self.path, "delete it and rerun extract_cams and gather_cams")
        try:
            self.method = _store_method(self._h5, self.path)
        except ValueError:
            self._h5.close()
            raise

    def __enter__(self) -> CamReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    def __len__(self) -> int:
        return len(self._h5)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._h5

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def ids(self) -> list[str]:
        """The image ids in the store (sorted)."""
        return sorted(self._h5.keys())

    def raw(self, image_id: str) -> CamRecord:
        """The stored maps [K, h, w] as float32 (scale factors applied)."""
        if image_id not in self._h5:
            raise MissingImageError(
                f"image id '{image_id}' is not in cam store {self.path}; the store was made "
                "from other images (another split or dataset): rerun extract_cams and gather_cams"
            )
        try:
            group = self._h5[image_id]
            stored = group["maps"][()].astype(np.float32)
            scales = np.asarray(group.attrs["scales"], dtype=np.float64)
            classes = [int(c) for c in group.attrs["classes"]]
            height, width = (int(v) for v in group.attrs["image_size"])
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(
                f"cannot read '{image_id}' from cam store {self.path} ({err}); delete the store "
                "and rerun extract_cams and gather_cams"
            ) from err
        maps = (stored * scales[:, None, None]).astype(np.float32)
        return CamRecord(image_id, maps, classes, (height, width))

    def upsampled(self, image_id: str) -> tuple[np.ndarray, list[int]]:
        """Maps [K, H, W] float32 in [0, 1] at the image size, max-normalised per class."""
        record = self.raw(image_id)
        return upsample_normalise(record.maps, record.image_size), record.classes

    def with_image(
        self, image_id: str, data_root: str | Path
    ) -> tuple[np.ndarray, list[int], np.ndarray]:
        """The upsampled maps, their classes and the image [H, W, 3] uint8 they were made from;
        a store made from other images (another size) is an error that says to re-extract."""
        maps, classes = self.upsampled(image_id)
        image = load_image(data_root, image_id)
        if image.shape[:2] != maps.shape[1:]:
            raise ValueError(
                f"{self.path}: maps of '{image_id}' are {maps.shape[1:]} but the image is "
                f"{image.shape[:2]}; the store was made from other images: re-run extract_cams"
            )
        return maps, classes, image
