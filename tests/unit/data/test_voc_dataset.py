"""VOC-layout torch Datasets (the transforms themselves: test_transforms.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wsss_core.data.datasets import VOCClassification, VOCSegmentation
from wsss_core.data.labels import build_label_table, read_label_table, write_label_table
from wsss_core.data.layout import load_gt_mask, load_image
from wsss_core.data.palette import save_mask
from wsss_core.data.synthetic import generate_dataset
from wsss_core.data.transforms import eval_transform, train_transform
from wsss_core.runtime import seed_everything
from wsss_core.train.loop import epoch_loader

MEAN = (0.5, 0.25, 0.125)
STD = (0.5, 0.25, 0.2)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("voc")
    root = base / "ds"
    generate_dataset(root, num_classes=4, image_size=48, num_train=6, num_val=3, seed=4)
    write_label_table(build_label_table(root, "train"), base / "labels" / "train.csv")
    return root


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


@pytest.mark.parametrize("workers", [0, 2])
def test_augmented_batches_repeat_under_the_seeding_policy(root, workers):
    """seed_everything + epoch_loader (as the trainers use them) give the same augmented
    batches on every run, in the main process and in loader workers alike."""
    dataset = VOCSegmentation(root, "train", transform=train_transform(32, (0.5, 1.5)))

    def batches(seed):
        seed_everything(seed)
        loader = epoch_loader(dataset, 3, seed, epoch=1, num_workers=workers)
        return [(images.clone(), masks.clone()) for images, masks in loader]

    first, again, other = batches(5), batches(5), batches(6)
    assert len(first) == 2
    for (a, m), (b, n) in zip(first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(m, n)
    assert not torch.equal(first[0][0], other[0][0])
