"""Miniature but faithful PASCAL VOC 2012 and SBD archives for the tests.

    mini = Miniature(voc_train=(...), voc_val=(...), sbd_train=(...), sbd_val=(...))
    write_voc_tree(tmp / "VOC2012", mini)           # VOCdevkit/VOC2012 as the archive holds it
    write_sbd_tree(tmp / "dataset", mini)           # benchmark_RELEASE/dataset of benchmark.tgz
    voc_tar(tmp / "VOCtrainval_11-May-2012.tar", mini)   # the archives themselves
    sbd_tgz(tmp / "benchmark.tgz", mini)
    mini.voc_mask(image_id), mini.sbd_mask(image_id)     # what the masks hold

The VOC tree has JPEGImages (every id, including detection-only ones that no segmentation list
names), Annotations XML (one object per class present), SegmentationClass and
SegmentationObject palette PNGs with VOC's 255 boundary band (VOC train and val only),
ImageSets/Segmentation (train, val, trainval) and ImageSets/Main (train, val, trainval and the
per-class ``<class>_<split>.txt`` lists). The SBD tree has cls/ and inst/ ``.mat`` files
(``GTcls.Segmentation``, no boundary band, different from VOC's mask of the same image), img/
and train.txt, val.txt. Both archives also hold files outside the folders the workflow
extracts, as the real ones do.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from wsss_core.data.palette import IGNORE_INDEX, save_mask
from wsss_core.data.voc import VOC_CLASSES

VOC_PREFIX = "VOCdevkit/VOC2012"
SBD_PREFIX = "benchmark_RELEASE/dataset"
# background colour and one colour per VOC class: objects are easy to tell apart
_BACKGROUND = np.array([110, 120, 100], np.uint8)


def _class_colour(label: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + label)
    return rng.integers(0, 256, 3).astype(np.uint8)


@dataclass(frozen=True)
class Miniature:
    """The ids of each list; images, masks and annotations follow from an id's position.

    ``classes`` are the VOC labels (1..20) objects are drawn from, in turn; every third
    image holds a second object. ``size`` (H, W) fixes every image's size; None varies it
    around 80 px, landscape and portrait, as VOC's images vary.
    """

    voc_train: tuple[str, ...]
    voc_val: tuple[str, ...]
    sbd_train: tuple[str, ...] = ()
    sbd_val: tuple[str, ...] = ()
    detection_only: tuple[str, ...] = ()  # in JPEGImages and Main, in no segmentation list
    classes: tuple[int, ...] = (1, 8, 12, 15)  # aeroplane, cat, dog, person
    size: tuple[int, int] | None = None

    @property
    def all_ids(self) -> list[str]:
        lists = (self.voc_train, self.voc_val, self.sbd_train, self.sbd_val, self.detection_only)
        return sorted({i for ids in lists for i in ids})

    def index(self, image_id: str) -> int:
        return self.all_ids.index(image_id)

    def shape(self, image_id: str) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        return ((72, 96), (96, 72), (80, 88))[self.index(image_id) % 3]

    def labels(self, image_id: str) -> list[int]:
        """The classes present in the image (its mask's labels besides 0 and 255)."""
        i = self.index(image_id)
        first = self.classes[i % len(self.classes)]
        if i % 3 == 2:
            second = self.classes[(i + 1) % len(self.classes)]
            return sorted({first, second})
        return [first]

    def _boxes(self, image_id: str) -> list[tuple[int, int, int, int, int]]:
        """(label, top, left, bottom, right) of each object, bottom/right exclusive."""
        h, w = self.shape(image_id)
        i = self.index(image_id)
        labels = self.labels(image_id)
        if len(labels) == 1:
            top, left = (h // 6 + i % 3, w // 5 + i % 4)
            return [(labels[0], top, left, h - h // 5, w - w // 6)]
        return [
            (labels[0], h // 8, w // 10, h // 2, w // 2),
            (labels[1], h // 2 + 1, w // 2 + 1, h - h // 8, w - w // 10),
        ]

    def sbd_mask(self, image_id: str) -> np.ndarray:
        """The SBD mask: the objects, no boundary band."""
        mask = np.zeros(self.shape(image_id), np.uint8)
        for label, top, left, bottom, right in self._boxes(image_id):
            mask[top:bottom, left:right] = label
        return mask

    def voc_mask(self, image_id: str) -> np.ndarray:
        """VOC's mask: the objects with a 255 band along their outline (1 px on tiny images)."""
        mask = np.zeros(self.shape(image_id), np.uint8)
        band = 1 if min(self.shape(image_id)) < 32 else 2
        for label, top, left, bottom, right in self._boxes(image_id):
            mask[top:bottom, left:right] = IGNORE_INDEX
            inner = mask[top + band : bottom - band, left + band : right - band]
            inner[...] = label
        return mask

    def instance_mask(self, image_id: str) -> np.ndarray:
        """SegmentationObject: object k is k+1, the same 255 band."""
        voc = self.voc_mask(image_id)
        instances = np.where(voc == IGNORE_INDEX, IGNORE_INDEX, 0).astype(np.uint8)
        for k, (label, *_box) in enumerate(self._boxes(image_id)):
            instances[voc == label] = k + 1
        return instances

    def image(self, image_id: str) -> np.ndarray:
        """RGB uint8: a noisy background with each object in its class colour."""
        rng = np.random.default_rng(self.index(image_id))
        h, w = self.shape(image_id)
        pixels = np.broadcast_to(_BACKGROUND, (h, w, 3)).astype(np.int16)
        for label, top, left, bottom, right in self._boxes(image_id):
            pixels[top:bottom, left:right] = _class_colour(label)
        pixels += rng.integers(-12, 13, pixels.shape, dtype=np.int16)
        return np.clip(pixels, 0, 255).astype(np.uint8)

    def annotation_xml(self, image_id: str) -> str:
        h, w = self.shape(image_id)
        objects = "".join(
            f"<object><name>{VOC_CLASSES[label - 1]}</name><pose>Unspecified</pose>"
            f"<truncated>0</truncated><difficult>0</difficult><bndbox><xmin>{left + 1}</xmin>"
            f"<ymin>{top + 1}</ymin><xmax>{right}</xmax><ymax>{bottom}</ymax></bndbox></object>"
            for label, top, left, bottom, right in self._boxes(image_id)
        )
        return (
            f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
            "<source><database>The VOC2008 Database</database></source>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"<segmented>{int(image_id in self.voc_train + self.voc_val)}</segmented>"
            f"{objects}</annotation>\n"
        )

    def label_rows(self, ids: list[str]) -> list[list[int]]:
        """The label table's 0/1 rows (20 VOC classes) of ``ids``, from the drawn objects."""
        return [[int(c in self.labels(i)) for c in range(1, 21)] for i in ids]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def write_voc_tree(root: Path, mini: Miniature) -> Path:
    """The ``VOCdevkit/VOC2012`` folder of VOCtrainval_11-May-2012.tar, at ``root``."""
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for image_id in mini.all_ids:
        Image.fromarray(mini.image(image_id)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(mini.annotation_xml(image_id))
    segmented = list(mini.voc_train + mini.voc_val)
    for image_id in segmented:
        save_mask(root / "SegmentationClass" / f"{image_id}.png", mini.voc_mask(image_id))
        save_mask(root / "SegmentationObject" / f"{image_id}.png", mini.instance_mask(image_id))
    seg = root / "ImageSets" / "Segmentation"
    _write_lines(seg / "train.txt", list(mini.voc_train))
    _write_lines(seg / "val.txt", list(mini.voc_val))
    _write_lines(seg / "trainval.txt", sorted(segmented))
    # Main: detection lists over every image (VOC's train/val split of the SBD-only ids too)
    main_val = (set(mini.voc_val) | set(mini.sbd_val)) - set(mini.voc_train)
    main = {
        "train": [i for i in mini.all_ids if i not in main_val],
        "val": [i for i in mini.all_ids if i in main_val],
    }
    main["trainval"] = mini.all_ids
    for split, ids in main.items():
        _write_lines(root / "ImageSets" / "Main" / f"{split}.txt", ids)
        for label, name in enumerate(VOC_CLASSES, start=1):
            rows = [f"{i} {' 1' if label in mini.labels(i) else '-1'}" for i in ids]
            _write_lines(root / "ImageSets" / "Main" / f"{name}_{split}.txt", rows)
    return root


def write_sbd_mat(path: Path, segmentation: np.ndarray, key: str = "GTcls") -> None:
    """An SBD ``cls/`` (``GTcls``) or ``inst/`` (``GTinst``) file holding ``segmentation``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.unique(segmentation[(segmentation > 0) & (segmentation < 255)])
    boundaries = np.empty((20, 1), dtype=object)  # one sparse boundary map per class in SBD
    for c in range(20):
        boundaries[c, 0] = np.zeros((1, 1), np.uint8)
    scipy.io.savemat(
        path,
        {
            key: {
                "Segmentation": segmentation,
                "Boundaries": boundaries,
                "CategoriesPresent": present.reshape(-1, 1).astype(np.uint8),
            }
        },
    )


def write_sbd_tree(root: Path, mini: Miniature) -> Path:
    """The ``benchmark_RELEASE/dataset`` folder of benchmark.tgz, at ``root``."""
    for image_id in sorted(set(mini.sbd_train + mini.sbd_val)):
        mask = mini.sbd_mask(image_id)
        write_sbd_mat(root / "cls" / f"{image_id}.mat", mask)
        write_sbd_mat(root / "inst" / f"{image_id}.mat", (mask > 0).astype(np.uint8), "GTinst")
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mini.image(image_id)).save(root / "img" / f"{image_id}.jpg")
    _write_lines(root / "train.txt", list(mini.sbd_train))
    _write_lines(root / "val.txt", list(mini.sbd_val))
    return root


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_336_000_000
    tar.addfile(info, io.BytesIO(data))


def voc_tar(path: Path, mini: Miniature) -> Path:
    """VOCtrainval_11-May-2012.tar (uncompressed, as the real one): VOCdevkit/VOC2012/..."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(path, "w") as tar:
        tar.add(write_voc_tree(Path(tmp) / "VOC2012", mini), arcname=VOC_PREFIX)
        _add_bytes(tar, "VOCdevkit/devkit_doc.txt", b"outside VOC2012: not extracted\n")
    return path


def sbd_tgz(path: Path, mini: Miniature) -> Path:
    """benchmark.tgz: benchmark_RELEASE/dataset/... and the benchmark code beside it."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(path, "w:gz") as tar:
        tar.add(write_sbd_tree(Path(tmp) / "dataset", mini), arcname=SBD_PREFIX)
        _add_bytes(tar, "benchmark_RELEASE/benchmark_code_RELEASE/README", b"not extracted\n")
        _add_bytes(tar, "benchmark_RELEASE/README", b"SBD\n")
    return path


def voc_test_tar(path: Path, mini: Miniature) -> Path:
    """VOC2012test.tar (uncompressed, as the evaluation server's): VOCdevkit/VOC2012/ with
    JPEGImages/<id>.jpg of every id of ``mini``, listed in ImageSets/Segmentation/test.txt and
    ImageSets/Main/test.txt; no masks."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(path, "w") as tar:
        root = Path(tmp) / "VOC2012"
        (root / "JPEGImages").mkdir(parents=True)
        for image_id in mini.all_ids:
            Image.fromarray(mini.image(image_id)).save(root / "JPEGImages" / f"{image_id}.jpg")
        _write_lines(root / "ImageSets" / "Segmentation" / "test.txt", mini.all_ids)
        _write_lines(root / "ImageSets" / "Main" / "test.txt", mini.all_ids)
        tar.add(root, arcname=VOC_PREFIX)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()
