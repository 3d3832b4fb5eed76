"""The synthetic VOC-format generator: determinism, layout, masks, balance, colour (both
families; the scenes family's own parts in test_synthetic_scenes.py)."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from workflow_utils import load_script

from wsss_core.data import synthetic
from wsss_core.data.palette import IGNORE_INDEX, VOC_PALETTE, load_mask
from wsss_core.data.synthetic import (
    MAX_CLASSES,
    SHAPES,
    STYLES,
    Layer,
    generate_dataset,
    ignore_band,
    label_map,
    max_classes,
    render_image,
)
from wsss_core.data.synthetic.scene_parts import SILHOUETTES

K = 4
SIZE = 48


CLASSES = {"shapes": ["disc", "square", "triangle", "ring"],
           "scenes": ["tree", "house", "ladder", "dumbbell"]}  # fmt: skip


@pytest.fixture(scope="module", params=STYLES)
def style(request):
    return request.param


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, style):
    root = tmp_path_factory.mktemp(f"syn_{style}") / "ds"
    generate_dataset(root, num_classes=K, image_size=SIZE, num_train=8, num_val=4, seed=7,
                     style=style)  # fmt: skip
    return root


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_ids_splits_and_classes(dataset, style):
    train = (dataset / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (dataset / "ImageSets/Segmentation/val.txt").read_text().split()
    assert train == [f"syn_{i:06d}" for i in range(8)]
    assert val == [f"syn_{i:06d}" for i in range(8, 12)]
    assert (dataset / "classes.txt").read_text().split() == CLASSES[style]
    for image_id in train + val:
        assert (dataset / "JPEGImages" / f"{image_id}.jpg").is_file()
        assert (dataset / "SegmentationClass" / f"{image_id}.png").is_file()
    # nothing else (no temporary files left behind)
    assert len(_files(dataset)) == 2 * 12 + 3


def test_same_arguments_give_byte_identical_files(dataset, style, tmp_path):
    generate_dataset(tmp_path / "again", num_classes=K, image_size=SIZE, num_train=8, num_val=4,
                     seed=7, style=style)  # fmt: skip
    assert _files(tmp_path / "again") == _files(dataset)


def test_other_seed_gives_other_images(dataset, style, tmp_path):
    generate_dataset(tmp_path / "other", num_classes=K, image_size=SIZE, num_train=8, num_val=4,
                     seed=8, style=style)  # fmt: skip
    ours, theirs = _files(dataset), _files(tmp_path / "other")
    differing = [p for p in ours if p.suffix == ".jpg" and ours[p] != theirs[p]]
    assert len(differing) == 12


def test_one_image_regenerates_alone(dataset, style):
    image, mask = render_image(7, 10, K, SIZE, style)
    np.testing.assert_array_equal(load_mask(dataset / "SegmentationClass/syn_000010.png"), mask)
    # the file is the JPEG (quality 90) of the regenerated pixels, byte for byte
    encoded = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(encoded, format="JPEG", quality=90)
    assert (dataset / "JPEGImages/syn_000010.jpg").read_bytes() == encoded.getvalue()
    with Image.open(dataset / "JPEGImages/syn_000010.jpg") as jpeg:
        decoded = np.asarray(jpeg.convert("RGB"), dtype=np.float64)
    # JPEG is lossy, but the decoded file is close to the rendered pixels (scenes hold
    # fine-grained textures, speckle above all, that JPEG smooths)
    assert np.abs(decoded - image).mean() < {"shapes": 12, "scenes": 16}[style]


def test_jpeg_and_palette_png_format(dataset):
    for path in sorted((dataset / "JPEGImages").glob("*.jpg")):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (SIZE, SIZE)
    for path in sorted((dataset / "SegmentationClass").glob("*.png")):
        with Image.open(path) as image:
            assert image.mode == "P" and image.size == (SIZE, SIZE)
            assert image.getpalette()[: 3 * 256] == VOC_PALETTE
        values = set(np.unique(load_mask(path)).tolist())
        assert values <= set(range(K + 1)) | {IGNORE_INDEX}
        assert values & set(range(1, K + 1)), f"{path.name} has no class"


def _ignore_band_is_thin_border(mask: np.ndarray, max_fraction: float = 0.15) -> None:
    ignore = mask == IGNORE_INDEX
    assert ignore.any()
    assert ignore.mean() < max_fraction
    # two different real labels never touch: a 255 pixel always separates them
    for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
        touching = (a != b) & (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
        assert not touching.any()
    # thin: every ignore pixel has a labelled pixel within two steps (5x5 neighbourhood;
    # one step on each side of a boundary, two inside a structure only 1-2 px wide)
    padded = np.pad(~ignore, 2, constant_values=False)
    near = np.zeros_like(ignore)
    for dy in range(5):
        for dx in range(5):
            near |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    assert near[ignore].all()


# scenes at the demo's size: their thin parts (ladder rails, strokes) are 1-2 px wide and all
# band at smaller sizes, and up to 4 objects and crossing strokes make more boundary
@pytest.mark.parametrize(("style", "size", "max_fraction"), [("shapes", 64, 0.15),
                                                             ("scenes", 96, 0.2)])  # fmt: skip
def test_ignore_band_on_every_boundary_and_thin(style, size, max_fraction):
    for index in range(30):
        _, mask = render_image(3, index, 6, size, style)
        _ignore_band_is_thin_border(mask, max_fraction)


def test_ignore_band_hand_example():
    labels = np.zeros((5, 6), dtype=np.uint8)
    labels[1:4, 2:5] = 2
    expected = np.array(
        [
            [0, 0, 255, 255, 255, 0],
            [0, 255, 255, 255, 255, 255],
            [0, 255, 255, 2, 255, 255],
            [0, 255, 255, 255, 255, 255],
            [0, 0, 255, 255, 255, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(ignore_band(labels), expected)


def test_later_layers_occlude_earlier_and_half_coverage_decides():
    colour = np.zeros((3, 3, 3))
    first = Layer(1, (0, 3, 0, 3), np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0.4]]), colour)
    second = Layer(2, (1, 4, 1, 4), np.array([[0.5, 1, 0], [1, 0.49, 0], [0, 0, 0]]), colour)
    distractor = Layer(0, (0, 1, 0, 2), np.ones((1, 2)), np.zeros((1, 2, 3)))
    expected = np.array([[0, 0, 1, 0], [1, 2, 2, 0], [1, 2, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(label_map([first, second, distractor], 4), expected)


@pytest.mark.parametrize("style", STYLES)
def test_every_image_has_a_visible_class_and_classes_are_balanced(style):
    num_images, k = 200, 5
    present = np.zeros((num_images, k), dtype=bool)
    for index in range(num_images):
        _, mask = render_image(11, index, k, SIZE, style)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(k + 1)) | {IGNORE_INDEX}, (index, values)
        present[index] = [(mask == c + 1).any() for c in range(k)]
    assert present.any(axis=1).all()
    frequency = present.mean(axis=0)
    assert (frequency >= 0.10).all(), frequency
    # roughly balanced: no class more than twice as frequent as another
    assert frequency.max() <= 2 * frequency.min(), frequency
    # several objects per image happen (occlusion and multi-label images)
    assert (present.sum(axis=1) >= 2).mean() > 0.3


@pytest.mark.parametrize("style", STYLES)
def test_colour_does_not_tell_the_class(style):
    k = 4
    sums = np.zeros((k, 3))
    counts = np.zeros(k)
    for index in range(300):
        image, mask = render_image(5, index, k, SIZE, style)
        for c in range(k):
            pixels = image[mask == c + 1]
            if len(pixels):
                sums[c] += pixels.mean(axis=0)
                counts[c] += 1
    means = sums / counts[:, None]
    assert counts.min() > 80
    # per-object mean colours average to the same grey for every class
    assert np.abs(means - means.mean(axis=0)).max() < 15, means


@pytest.mark.parametrize("family", [SHAPES, SILHOUETTES], ids=STYLES)
def test_shapes_fit_unit_disc_and_differ(family):
    grid = np.linspace(-1.2, 1.2, 241)
    u, v = np.meshgrid(grid, grid)
    masks = {}
    for name, inside in family.items():
        m = inside(u, v)
        assert not (m & (u * u + v * v > 1.0)).any(), name
        assert m.mean() > 0.08, name
        masks[name] = m
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.9, (a, b, iou)


def test_class_names_and_maximum():
    assert synthetic.class_names(3) == ["disc", "square", "triangle"]
    assert synthetic.class_names(3, "scenes") == ["tree", "house", "ladder"]
    assert len(synthetic.class_names(MAX_CLASSES)) == MAX_CLASSES == max_classes("shapes") == 12
    assert max_classes("scenes") == 10  # the schema allows 1 to 10 classes for both
    with pytest.raises(ValueError, match="style must be one of shapes, scenes, got 'photos'"):
        synthetic.class_names(3, "photos")


# sha256 of the rendered arrays (image then mask bytes) of images 0..11 of seed 7, 6 classes,
# 48 px, computed with the single-module generator at commit 995588c (before the scenes family):
# the shapes family must stay byte-identical (the JPEG and PNG files follow from these arrays).
SHAPES_DIGEST = "bb30aefdaebe924ad939ef092c6ac7e7600ef6d50aaea0cc4a50bcc2328993d8"


def test_shapes_output_is_unchanged():
    digest = hashlib.sha256()
    for index in range(12):
        image, mask = render_image(7, index, 6, 48)
        digest.update(image.tobytes())
        digest.update(mask.tobytes())
    assert digest.hexdigest() == SHAPES_DIGEST
    # the default style is shapes
    for a, b in zip(render_image(7, 3, 6, 48), render_image(7, 3, 6, 48, "shapes"), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": MAX_CLASSES + 1}, "num_classes"),
        ({"image_size": 31}, "image_size"),
        ({"num_train": 0}, "num_train"),
        ({"num_val": -1}, "num_val"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"seed": -1}, "seed"),
        ({"style": "photos"}, "style must be one of shapes, scenes"),
        ({"style": "scenes", "num_classes": 11}, r"between 1 and 10 \(the synthetic scenes"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, message):
    args = {"num_classes": 3, "image_size": 48, "num_train": 2, "num_val": 2, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "ds", **args)
    assert not (tmp_path / "ds").exists()


def test_make_synthetic_script_writes_the_dataset_atomically(tmp_path, dataset, style):
    main = load_script("data_synthetic").main
    cfg = {"num_classes": 4, "image_size": 48, "num_train": 8, "num_val": 4, "seed": 7,
           "style": style}  # fmt: skip
    root = tmp_path / "data" / "synthetic"
    assert main(["--root", str(root), "--config-json", json.dumps(cfg)]) == 0
    assert _files(root) == _files(dataset)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["synthetic"]
    # bad arguments: a clear error, nothing written
    bad = json.dumps({**cfg, "num_val": 0})
    assert main(["--root", str(tmp_path / "bad"), "--config-json", bad]) == 2
    assert not (tmp_path / "bad").exists()
    # the style is a key the rule passes: without it, an error that names it
    no_style = json.dumps({k: v for k, v in cfg.items() if k != "style"})
    assert main(["--root", str(tmp_path / "bad"), "--config-json", no_style]) == 2
    assert not (tmp_path / "bad").exists()
