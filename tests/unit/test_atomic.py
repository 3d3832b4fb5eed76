"""Atomic outputs: the umask's mode, no half-written file under a final name, and the
temporaries of a killed job removed when the target is written again."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wsss_core.io import (
    atomic_directory,
    atomic_path,
    current_umask,
    remove_stale_temporaries,
    write_text,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing_it(umask_027):
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_files_and_folders_take_the_umask(tmp_path, umask_027):
    write_text(tmp_path / "a.txt", "x")
    with atomic_directory(tmp_path / "masks") as tmp:
        write_text(tmp / "m.png", "y")
    assert mode(tmp_path / "a.txt") == 0o640
    assert mode(tmp_path / "masks") == 0o750
    assert mode(tmp_path / "masks" / "m.png") == 0o640
    os.umask(0o002)
    write_text(tmp_path / "b.txt", "x")
    assert mode(tmp_path / "b.txt") == 0o664


def test_a_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    write_text(tmp_path / "t.csv", "old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "t.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "t.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_stale_temporaries_of_the_target_only_are_removed(tmp_path):
    """A killed job's temporaries of a.h5 go when a.h5 is written again; those of a.h5.b.h5 (a
    name that starts the same), of other targets and non-temporary files stay."""
    stale = [tmp_path / ".a.h5.k3j_x9q2.tmp.h5", tmp_path / ".a.h5.00000000.tmp.h5"]
    kept = [
        tmp_path / ".a.h5.b.h5.k3j_x9q2.tmp.h5",  # another target's temporary
        tmp_path / ".b.h5.k3j_x9q2.tmp.h5",
        tmp_path / ".a.h5.short.tmp.h5",  # not 8 random characters
        tmp_path / "a.h5.k3j_x9q2.tmp.h5",  # not hidden
    ]
    for path in stale + kept:
        path.write_bytes(b"\0" * 10)
    with atomic_path(tmp_path / "a.h5") as tmp:
        assert tmp.name.startswith(".a.h5.") and tmp.name.endswith(".tmp.h5")
        tmp.write_bytes(b"new")
    assert (tmp_path / "a.h5").read_bytes() == b"new"
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_stale_temporary_folders_are_removed(tmp_path):
    stale = tmp_path / ".masks.ab12cd34.tmp"
    (stale / "sub").mkdir(parents=True)
    other = tmp_path / ".masks_rw.ab12cd34.tmp"
    other.mkdir()
    assert remove_stale_temporaries(tmp_path / "masks", is_dir=True) == [stale]
    assert not stale.exists() and other.exists()
    with atomic_directory(tmp_path / "masks_rw") as tmp:
        (tmp / "x").write_text("1")
    assert not other.exists() and (tmp_path / "masks_rw" / "x").read_text() == "1"
    assert remove_stale_temporaries(tmp_path / "missing" / "x") == []


def test_save_torch_gives_the_same_bytes_for_the_same_content(tmp_path):
    """The archive inside a .pt file is not named after the temporary file, so writing the same
    tensors twice gives byte-identical files (and a rerun that reproduces a model changes no
    digest downstream)."""
    import torch

    from wsss_core.io import save_torch

    state = {"w": torch.arange(6.0).reshape(2, 3), "epoch": 3, "names": ["a", "b"]}
    save_torch(tmp_path / "a.pt", state)
    save_torch(tmp_path / "b.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["names"] == ["a", "b"]


def test_save_image_writes_rgb_by_suffix(tmp_path):
    import numpy as np
    from PIL import Image

    from wsss_core.io import save_image

    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    save_image(tmp_path / "x.png", pixels)
    with Image.open(tmp_path / "x.png") as image:
        assert image.format == "PNG" and image.mode == "RGB"
        np.testing.assert_array_equal(np.array(image), pixels)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_image(tmp_path / "y.png", pixels.astype(float))
