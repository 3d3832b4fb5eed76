"""VOC-layout torch Datasets and joint image/mask augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from wsss_core.data.datasets import VOCClassification, VOCSegmentation
from wsss_core.data.labels import build_label_table, read_label_table, write_label_table
from wsss_core.data.layout import load_gt_mask, load_image
from wsss_core.data.palette import save_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.data.transforms import (
    ColourJitter,
    Normalise,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRescale,
    eval_transform,
    image_to_tensor,
    mask_to_tensor,
    train_transform,
)

MEAN = (0.5, 0.25, 0.125)
STD = (0.5, 0.25, 0.2)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("voc")
    root = base / "ds"
    generate_dataset(root, num_classes=4, image_size=48, num_train=6, num_val=3, seed=4)
    write_label_table(build_label_table(root, "train"), base / "labels" / "train.csv")
    return root


def _hand_image():
    """A 3x4 image whose red channel numbers the pixels, and a mask with distinct labels."""
    image = np.zeros((3, 4, 3), dtype=np.uint8)
    image[..., 0] = np.arange(12).reshape(3, 4) * 20
    image[..., 1] = 200
    mask = np.array([[0, 1, 2, 255], [3, 3, 0, 1], [2, 0, 0, 1]], dtype=np.uint8)
    return image, mask


def test_classification_items_match_the_label_table(root):
    table = root.parent / "labels" / "train.csv"
    ids, _, labels = read_label_table(table)
    dataset = VOCClassification(root, "train", table, eval_transform(None, MEAN, STD))
    assert len(dataset) == 6 and dataset.class_names == ["disc", "square", "triangle", "ring"]
    for index in range(len(dataset)):
        image, target = dataset[index]
        row = ids.index(dataset.ids[index])
        assert target.dtype == torch.float32
        np.testing.assert_array_equal(target.numpy(), labels[row])
        raw = load_image(root, dataset.ids[index]).astype(np.float32) / 255
        expected = (raw - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
        np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_classification_needs_every_split_id_in_the_table(root):
    with pytest.raises(ValueError, match="re-run make_labels"):
        VOCClassification(root, "val", root.parent / "labels" / "train.csv")


def test_segmentation_items_and_pseudo_mask_dir(root, tmp_path):
    dataset = VOCSegmentation(root, "val", transform=eval_transform(None, MEAN, STD))
    image, mask = dataset[1]
    assert image.shape == (3, 48, 48) and mask.dtype == torch.int64
    np.testing.assert_array_equal(mask.numpy(), load_gt_mask(root, dataset.ids[1]))
    for image_id in dataset.ids:
        pseudo = np.full((48, 48), 2, dtype=np.uint8)
        pseudo[:5] = 255
        save_mask(tmp_path / f"{image_id}.png", pseudo)
    pseudo_set = VOCSegmentation(root, "val", mask_dir=tmp_path)
    _, mask = pseudo_set[0]
    assert mask[:5].eq(255).all() and mask[5:].eq(2).all()
    save_mask(tmp_path / f"{dataset.ids[2]}.png", np.zeros((10, 48), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"is 48x10 but image .* is 48x48"):
        pseudo_set[2]
    (tmp_path / f"{dataset.ids[0]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"mask .*\.png not found"):
        pseudo_set[0]


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/x\.jpg not found; re-run"):
        load_image(tmp_path, "x")
    (tmp_path / "JPEGImages" / "x.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*x\.jpg"):
        load_image(tmp_path, "x")


def test_normalise_values():
    image = torch.tensor([[[1.0]], [[0.5]], [[0.0]]])
    out, mask = Normalise(MEAN, STD)(image, None)
    np.testing.assert_allclose(out.flatten().numpy(), [1.0, 1.0, -0.625])
    assert mask is None


def test_flip_mirrors_image_and_mask_together():
    image, mask = _hand_image()
    image_t, mask_t = image_to_tensor(image), mask_to_tensor(mask)
    flipped, flipped_mask = RandomHorizontalFlip(p=1.0)(image_t, mask_t)
    np.testing.assert_array_equal(flipped_mask.numpy(), mask[:, ::-1])
    np.testing.assert_array_equal(
        (flipped * 255).round().byte().permute(1, 2, 0).numpy(), image[:, ::-1]
    )
    same, same_mask = RandomHorizontalFlip(p=0.0)(image_t, mask_t)
    assert torch.equal(same, image_t) and torch.equal(same_mask, mask_t)


def test_crop_pads_mask_with_ignore_and_image_with_fill():
    image, mask = _hand_image()
    out, out_mask = RandomCrop(6, fill=0.0)(image_to_tensor(image), mask_to_tensor(mask))
    assert out.shape == (3, 6, 6) and out_mask.shape == (6, 6)
    # the input is smaller than the crop: it sits at the top-left, the rest is padding
    np.testing.assert_array_equal(out_mask[:3, :4].numpy(), mask)
    assert out_mask[3:].eq(255).all() and out_mask[:, 4:].eq(255).all()
    assert out[:, 3:].eq(0).all() and out[:, :, 4:].eq(0).all()
    torch.testing.assert_close(out[:, :3, :4], image_to_tensor(image))


def test_crop_window_is_the_same_for_image_and_mask():
    torch.manual_seed(0)
    grid = np.arange(100, dtype=np.uint8).reshape(10, 10)
    image = np.stack([grid, grid, grid], axis=-1)
    for _ in range(10):
        out, out_mask = RandomCrop(4)(image_to_tensor(image), mask_to_tensor(grid))
        np.testing.assert_array_equal((out[0] * 255).round().long().numpy(), out_mask.numpy())
        top, left = divmod(int(out_mask[0, 0]), 10)
        np.testing.assert_array_equal(out_mask.numpy(), grid[top : top + 4, left : left + 4])


def test_rescale_uses_nearest_neighbour_for_masks():
    image, mask = _hand_image()
    out, out_mask = RandomRescale((2.0, 2.0))(image_to_tensor(image), mask_to_tensor(mask))
    assert out.shape == (3, 6, 8)
    np.testing.assert_array_equal(out_mask.numpy(), np.kron(mask, np.ones((2, 2), np.uint8)))
    _, small = RandomRescale((0.5, 0.5))(image_to_tensor(image), mask_to_tensor(mask))
    assert set(small.unique().tolist()) <= set(np.unique(mask).tolist())


def test_colour_jitter_changes_image_only_and_stays_in_range():
    torch.manual_seed(1)
    image, mask = _hand_image()
    image_t, mask_t = image_to_tensor(image), mask_to_tensor(mask)
    out, out_mask = ColourJitter(0.5)(image_t, mask_t)
    assert torch.equal(out_mask, mask_t)
    assert not torch.equal(out, image_t)
    assert out.min() >= 0 and out.max() <= 1
    same, _ = ColourJitter(0.0)(image_t, mask_t)
    assert torch.equal(same, image_t)


def test_train_transform_keeps_pixels_and_labels_aligned():
    """With no rescale or jitter, every output pixel still carries its own mask label."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 5, size=(20, 30)).astype(np.uint8)
    image = np.repeat(mask[..., None] * 40, 3, axis=-1).astype(np.uint8)
    transform = train_transform(24, (1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1), jitter=0.0)
    flipped = []
    for seed in range(12):
        torch.manual_seed(seed)
        out, out_mask = transform(image_to_tensor(image), mask_to_tensor(mask))
        assert out.shape == (3, 24, 24) and out_mask.shape == (24, 24)
        labelled = out_mask != 255
        np.testing.assert_array_equal(
            (out[0][labelled] * 255 / 40).round().long().numpy(), out_mask[labelled].numpy()
        )
        # height 20 < 24: padding rows are ignore (mask) and 0 (image)
        assert out_mask[20:].eq(255).all() and out[:, 20:].eq(0).all()
        # the 24 columns are a window of the mask, mirrored or not
        rows = out_mask[:20].numpy()
        windows = {
            (flip, left): (mask[:, ::-1] if flip else mask)[:, left : left + 24]
            for flip in (False, True)
            for left in range(7)
        }
        matches = [key for key, window in windows.items() if np.array_equal(rows, window)]
        assert len(matches) == 1
        flipped.append(matches[0][0])
    assert any(flipped) and not all(flipped)


def test_train_transform_is_reproducible_from_the_torch_seed():
    image, mask = _hand_image()
    image = np.asarray(Image.fromarray(image).resize((40, 30)))
    mask = np.asarray(Image.fromarray(mask).resize((40, 30), Image.NEAREST))
    transform = train_transform(16, (0.7, 1.3), jitter=0.3)

    def run(seed):
        torch.manual_seed(seed)
        return transform(image_to_tensor(image), mask_to_tensor(mask))

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_eval_transform_resizes_to_a_square(root):
    dataset = VOCSegmentation(root, "val", transform=eval_transform(32))
    image, mask = dataset[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    full = load_gt_mask(root, dataset.ids[0])
    assert set(mask.unique().tolist()) <= set(np.unique(full).tolist())


def test_dataloader_batches_augmented_items(root):
    table = root.parent / "labels" / "train.csv"
    dataset = VOCClassification(root, "train", table, train_transform(40))
    torch.manual_seed(0)
    images, targets = next(iter(DataLoader(dataset, batch_size=4, shuffle=True)))
    assert images.shape == (4, 3, 40, 40) and targets.shape == (4, 4)
    assert set(targets.unique().tolist()) <= {0.0, 1.0}


def test_gt_mask_prefers_segmentation_class_aug(tmp_path):
    from wsss_core.data.layout import load_gt_mask
    from wsss_core.data.palette import save_mask

    save_mask(tmp_path / "SegmentationClass" / "a.png", np.zeros((2, 2), np.uint8))
    save_mask(tmp_path / "SegmentationClass" / "b.png", np.zeros((2, 2), np.uint8))
    save_mask(tmp_path / "SegmentationClassAug" / "a.png", np.ones((2, 2), np.uint8))
    assert load_gt_mask(tmp_path, "a").tolist() == [[1, 1], [1, 1]]
    assert load_gt_mask(tmp_path, "b").tolist() == [[0, 0], [0, 0]]
