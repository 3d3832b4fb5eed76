"""Joint image/mask transforms (torchvision.transforms.v2 with tv_tensors.Image/Mask)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_core.data.transforms import (
    Compose,
    PadTo,
    Rescale,
    eval_transform,
    image_to_tensor,
    mask_to_tensor,
    train_transform,
)

MEAN = (0.5, 0.25, 0.125)
STD = (0.5, 0.25, 0.2)
PLAIN = {"mean": (0, 0, 0), "std": (1, 1, 1)}


def _hand_image() -> tuple[np.ndarray, np.ndarray]:
    """A 3x4 image whose red channel numbers the pixels, and a mask with distinct labels."""
    image = np.zeros((3, 4, 3), dtype=np.uint8)
    image[..., 0] = np.arange(12).reshape(3, 4) * 20
    image[..., 1] = 200
    mask = np.array([[0, 1, 2, 255], [3, 3, 0, 1], [2, 0, 0, 1]], dtype=np.uint8)
    return image, mask


def _tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return image_to_tensor(image), mask_to_tensor(mask)


def _bytes(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().byte().permute(1, 2, 0).numpy()


def test_outputs_are_plain_tensors_and_mask_may_be_absent():
    image, mask = _tensors(*_hand_image())
    out, out_mask = eval_transform(None)(image, mask)
    assert type(out) is torch.Tensor and type(out_mask) is torch.Tensor
    assert out_mask.dtype == torch.int64
    out, none = train_transform(4)(image, None)
    assert type(out) is torch.Tensor and out.shape == (3, 4, 4) and none is None


def test_normalise_values():
    image = torch.tensor([[[1.0]], [[0.5]], [[0.0]]])
    out, mask = eval_transform(None, MEAN, STD)(image, None)
    np.testing.assert_allclose(out.flatten().numpy(), [1.0, 1.0, -0.625])
    assert mask is None


def test_flip_mirrors_image_and_mask_exactly():
    """No rescale, jitter or padding: the crop is the whole image, mirrored or not."""
    image, mask = _hand_image()
    transform = train_transform(3, (1.0, 1.0), jitter=0.0, **PLAIN)
    square, square_mask = image[:, :3], mask[:, :3]
    seen = set()
    for seed in range(16):
        torch.manual_seed(seed)
        out, out_mask = transform(*_tensors(square, square_mask))
        mirrored = np.array_equal(out_mask.numpy(), square_mask[:, ::-1])
        expected = (square[:, ::-1], square_mask[:, ::-1]) if mirrored else (square, square_mask)
        np.testing.assert_array_equal(_bytes(out), expected[0])
        np.testing.assert_array_equal(out_mask.numpy(), expected[1])
        seen.add(mirrored)
    assert seen == {True, False}


def test_crop_pads_right_and_bottom_mask_with_ignore_and_image_with_fill():
    image, mask = _hand_image()
    out, out_mask = Compose([PadTo(6, fill=0.0)])(*_tensors(image, mask))
    assert out.shape == (3, 6, 6) and out_mask.shape == (6, 6)
    # the input is smaller than the crop: it sits at the top-left, the rest is padding
    np.testing.assert_array_equal(out_mask[:3, :4].numpy(), mask)
    assert out_mask[3:].eq(255).all() and out_mask[:, 4:].eq(255).all()
    assert out[:, 3:].eq(0).all() and out[:, :, 4:].eq(0).all()
    torch.testing.assert_close(out[:, :3, :4], image_to_tensor(image))
    torch.manual_seed(0)
    out, out_mask = train_transform(6, (1.0, 1.0), jitter=0.0, flip=False, **PLAIN)(
        *_tensors(image, mask)
    )
    np.testing.assert_array_equal(out_mask[:3, :4].numpy(), mask)
    np.testing.assert_array_equal(_bytes(out[:, :3, :4]), image)
    assert out_mask[3:].eq(255).all() and out[:, :, 4:].eq(0).all()


def test_crop_window_is_the_same_for_image_and_mask():
    grid = np.arange(100, dtype=np.uint8).reshape(10, 10)
    image = np.stack([grid, grid, grid], axis=-1)
    transform = train_transform(4, (1.0, 1.0), jitter=0.0, flip=False, **PLAIN)
    corners = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out, out_mask = transform(*_tensors(image, grid))
        np.testing.assert_array_equal(_bytes(out)[..., 0], out_mask.numpy())
        top, left = divmod(int(out_mask[0, 0]), 10)
        np.testing.assert_array_equal(out_mask.numpy(), grid[top : top + 4, left : left + 4])
        corners.add((top, left))
    assert len(corners) > 10  # windows anywhere in the 7 x 7 possible corners


def test_rescale_uses_nearest_exact_for_masks():
    image, mask = _hand_image()
    out, out_mask = Compose([Rescale(scale_range=(2.0, 2.0))])(*_tensors(image, mask))
    assert out.shape == (3, 6, 8)
    np.testing.assert_array_equal(out_mask.numpy(), np.kron(mask, np.ones((2, 2), np.uint8)))
    # halving a 4x4 label grid keeps the pixel at the centre of each 2x2 block: (2i+1, 2j+1)
    grid = np.arange(16, dtype=np.uint8).reshape(4, 4)
    _, half = Compose([Rescale(size=(2, 2))])(*_tensors(np.stack([grid] * 3, -1), grid))
    assert half.tolist() == [[5, 7], [13, 15]]


def test_masks_never_get_interpolated_labels():
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 3, 7, 255], np.uint8), size=(23, 31))
    image = rng.integers(0, 256, size=(23, 31, 3), dtype=np.uint8)
    transform = train_transform(20, (0.3, 2.1), jitter=0.4)
    for seed in range(30):
        torch.manual_seed(seed)
        _, out_mask = transform(*_tensors(image, mask))
        assert set(out_mask.unique().tolist()) <= {0, 3, 7, 255}
    _, resized = eval_transform(17)(*_tensors(image, mask))
    assert set(resized.unique().tolist()) <= {0, 3, 7, 255}


def test_rescale_bilinear_image_matches_torch_interpolate():
    rng = np.random.default_rng(1)
    image = image_to_tensor(rng.integers(0, 256, size=(9, 12, 3), dtype=np.uint8))
    for size, antialias in (((18, 24), False), ((5, 7), True)):
        out, _ = Compose([Rescale(size=size)])(image, None)
        expected = torch.nn.functional.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False, antialias=antialias
        )[0]
        torch.testing.assert_close(out, expected)


def test_colour_jitter_scales_a_grey_image_by_a_bounded_factor():
    """On a uniform grey image contrast and saturation are no-ops and brightness multiplies."""
    grey = np.full((8, 8, 3), 100, dtype=np.uint8)
    mask = np.ones((8, 8), dtype=np.uint8)
    transform = train_transform(8, (1.0, 1.0), jitter=0.5, flip=False, **PLAIN)
    factors = []
    for seed in range(20):
        torch.manual_seed(seed)
        out, out_mask = transform(*_tensors(grey, mask))
        assert out_mask.eq(1).all()
        torch.testing.assert_close(out, out[:1, :1, :1].expand_as(out))
        factors.append(float(out[0, 0, 0]) / (100 / 255))
    assert 0.5 <= min(factors) < 0.9 and 1.1 < max(factors) <= 1.5


def test_colour_jitter_stays_in_range_and_zero_strength_is_identity():
    rng = np.random.default_rng(2)
    image, mask = _tensors(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), np.zeros((6, 6)))
    torch.manual_seed(1)
    out, _ = train_transform(6, (1.0, 1.0), jitter=0.9, flip=False, **PLAIN)(image, mask)
    assert not torch.equal(out, image) and out.min() >= 0 and out.max() <= 1
    same, _ = train_transform(6, (1.0, 1.0), jitter=0.0, flip=False, **PLAIN)(image, mask)
    assert torch.equal(same, image)


def test_train_transform_is_reproducible_from_the_torch_seed():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (30, 40), dtype=np.uint8)
    transform = train_transform(16, (0.7, 1.3), jitter=0.3)

    def run(seed):
        torch.manual_seed(seed)
        return transform(*_tensors(image, mask))

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_size": 0}, "crop size must be positive"),
        ({"scale_range": (1.2, 0.8)}, "0 < low <= high"),
        ({"jitter": 1.0}, r"colour jitter strength must be in \[0, 1\)"),
        ({"std": (1, 0, 1)}, "std > 0"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_transform(**{"crop_size": 8, **kwargs})
