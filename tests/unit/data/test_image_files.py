"""wsss_core.data.image_files: image files and folders from a command line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsss_core.cli import UserError
from wsss_core.data.image_files import (
    ORIENTATION_TAG,
    ImageFiles,
    batches_by_size,
    find_images,
    image_size,
    output_stems,
    read_image,
)

RNG = np.random.default_rng(0)


def pixels(h: int, w: int, channels: int = 3) -> np.ndarray:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def test_a_folder_gives_its_image_files_sorted(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.webp", ".hidden.png", "notes.txt", "d.tif"):
        Image.fromarray(pixels(4, 5)).save(tmp_path / name, format="PNG")
    (tmp_path / "sub").mkdir()
    Image.fromarray(pixels(4, 5)).save(tmp_path / "sub" / "e.png")
    found = find_images([tmp_path])
    assert [p.name for p in found] == ["a.jpg", "b.PNG", "c.webp", "d.tif"]
    # a file named explicitly is taken whatever its extension, and only once
    again = find_images([tmp_path / "notes.txt", tmp_path, tmp_path / "a.jpg"])
    assert [p.name for p in again] == ["notes.txt", "a.jpg", "b.PNG", "c.webp", "d.tif"]


def test_the_output_folder_is_left_out(tmp_path):
    Image.fromarray(pixels(4, 5)).save(tmp_path / "a.png")
    Image.fromarray(pixels(4, 5)).save(tmp_path / "a_overlay.png")
    assert len(find_images([tmp_path])) == 2
    with pytest.raises(UserError, match="no images found"):
        find_images([tmp_path], exclude=tmp_path)


def test_missing_and_empty_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=f"image or folder {tmp_path / 'x.jpg'} does not exist"):
        find_images([tmp_path / "x.jpg"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=rf"no images found in {tmp_path} \(looked for .*\.jpg"):
        find_images([tmp_path])
    with pytest.raises(UserError, match="no images given"):
        find_images([])


def test_two_images_with_one_stem_are_a_user_error(tmp_path):
    (tmp_path / "a").mkdir()
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "x.png", tmp_path / "y.png"]
    assert output_stems(paths[1:]) == ["x", "y"]
    with pytest.raises(UserError, match="same name stem 'x'"):
        output_stems(paths)


@pytest.mark.parametrize(
    ("mode", "array"),
    [
        ("RGB", pixels(7, 9)),
        ("RGBA", pixels(7, 9, 4)),
        ("L", pixels(7, 9, 1)),
        ("P", pixels(7, 9, 1)),
        ("I;16", (pixels(7, 9, 1).astype(np.uint16) * 200)),
    ],
)
def test_any_mode_is_read_as_rgb(tmp_path, mode, array):
    path = tmp_path / "x.png"
    picture = Image.fromarray(array) if mode == "I;16" else Image.fromarray(array, mode=mode)
    assert picture.mode == mode
    picture.save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (7, 9, 3)
    assert image_size(path) == (7, 9)
    if mode == "RGB":
        np.testing.assert_array_equal(image, array)


def test_the_exif_orientation_is_applied(tmp_path):
    array = pixels(6, 10)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # turned 90 degrees clockwise for display
    Image.fromarray(array).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    image = read_image(tmp_path / "photo.jpg")
    assert image.shape == (10, 6, 3) and image_size(tmp_path / "photo.jpg") == (10, 6)


def test_an_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    for read in (image_size, read_image):
        with pytest.raises(UserError, match=f"cannot read image {tmp_path / 'bad.jpg'}"):
            read(tmp_path / "bad.jpg")
    Image.fromarray(pixels(64, 64)).save(tmp_path / "cut.jpg")
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert image_size(tmp_path / "cut.jpg") == (64, 64)  # the header is whole
    with pytest.raises(UserError, match="damaged: convert or replace it, or leave it out"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(UserError, match="bad.jpg"):
        ImageFiles.collect([tmp_path])  # collecting reads every header first


def test_collect(tmp_path):
    Image.fromarray(pixels(3, 4)).save(tmp_path / "b.png")
    Image.fromarray(pixels(5, 2)).save(tmp_path / "a.bmp")
    files = ImageFiles.collect([tmp_path])
    assert files.stems == ["a", "b"] and files.sizes == [(5, 2), (3, 4)] and len(files) == 2


def test_batches_of_one_size():
    sizes = [(2, 3), (4, 4), (2, 3), (2, 3), (4, 4), (1, 1), (2, 3)]
    assert batches_by_size(sizes, 2) == [[0, 2], [3, 6], [1, 4], [5]]
    assert batches_by_size(sizes, 10) == [[0, 2, 3, 6], [1, 4], [5]]
    assert batches_by_size([], 3) == []
    with pytest.raises(ValueError, match="batch size"):
        batches_by_size(sizes, 0)
