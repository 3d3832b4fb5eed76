"""wsss_core.cli.script_main, and the expected errors the library raises for bad input: each
names the file or config key and says what to do, and a script prints it as one line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from workflow_utils import load_script

from wsss_core.cams.store import CamReader, CamRecord, MissingImageError, write_store
from wsss_core.classifier.model import ClassifierConfigError, check_patch_multiple, patch_size
from wsss_core.cli import EXIT_EXPECTED, UserError, progress_bar, script_main
from wsss_core.data.layout import check_mask_labels, load_gt_mask, load_image
from wsss_core.data.palette import save_mask
from wsss_core.runtime import select_device
from wsss_core.segmenter.model import load_segmenter


@script_main
def _main(argv: list[str] | None = None) -> int:
    kind = argv[0]
    if kind == "user":
        raise UserError("file x.png is broken;\n  replace it")
    if kind == "value":
        raise ValueError("config key a.b: bad value; set it to 1")
    if kind == "missing":
        raise FileNotFoundError("label table t.csv not found; run make_labels")
    if kind == "bug":
        raise KeyError("a bug")
    if kind == "none":
        return None
    logging.getLogger("x").info("working")
    return 3


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("user", "test_cli: error: file x.png is broken; replace it"),
        ("value", "test_cli: error: config key a.b: bad value; set it to 1"),
        ("missing", "test_cli: error: label table t.csv not found; run make_labels"),
    ],
)
def test_an_expected_error_is_one_line_and_exit_2(kind, line, capsys):
    assert _main([kind]) == EXIT_EXPECTED == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [line]
    assert "Traceback" not in captured.err and captured.out == ""


def test_an_unexpected_error_propagates_with_its_traceback():
    with pytest.raises(KeyError, match="a bug"):
        _main(["bug"])


def test_the_return_code_passes_through():
    assert _main(["none"]) == 0
    assert _main(["ok"]) == 3


def test_a_converted_script_names_itself(tmp_path, capsys):
    code = load_script("shards_gather").main(["--shards", str(tmp_path / "no"), "--out", "x"])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"shards_gather: error: shard folder {tmp_path / 'no'} is missing")


@script_main(name="tool")
def _named(argv: list[str] | None = None) -> int:
    raise UserError(f"bad {argv[0]}")


def test_a_named_main_says_its_name(capsys):
    assert _named(["x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["tool: error: bad x"]


def test_progress_bar_is_tqdm_or_plain_lines(monkeypatch, capsys):
    with progress_bar(3, "work") as update:
        update(3)
    assert "work: 100%" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tqdm", None)  # not installed: import fails
    with progress_bar(25, "work") as update:
        for _ in range(12):
            update(2)
        update(1)
    lines = capsys.readouterr().err.splitlines()  # every step of 25 // 10 images, and the end
    assert lines == [f"work: {n}/25 img" for n in (*range(2, 25, 2), 25)]


# ------------------------------------------------------------------ errors at the point of I/O


def _root(tmp_path: Path) -> Path:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "JPEGImages/a.jpg")
    return tmp_path


def test_an_unreadable_image_names_the_file_and_the_split_lists(tmp_path):
    root = _root(tmp_path)
    data = (root / "JPEGImages/a.jpg").read_bytes()
    (root / "JPEGImages/a.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image .*a\.jpg: it is unreadable") as info:
        load_image(root, "a")
    assert "remove 'a' from the split lists in" in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/b\.jpg not found; re-run"):
        load_image(root, "b")


def test_a_mask_with_unknown_labels_names_the_file(tmp_path):
    root = _root(tmp_path)
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0], mask[1, 1] = 77, 255
    save_mask(root / "SegmentationClass/a.png", mask)
    assert load_gt_mask(root, "a").max() == 255  # without num_classes: not checked
    with pytest.raises(ValueError, match=r"SegmentationClass/a\.png holds label\(s\) \[77\]"):
        load_gt_mask(root, "a", num_classes=4)
    check_mask_labels(np.array([[0, 3, 255]], np.uint8), 4, "m.png")
    with pytest.raises(FileNotFoundError, match=r"SegmentationClass/b\.png not found; replace"):
        load_gt_mask(root, "b")


def test_a_store_without_the_image_is_a_key_error_and_a_user_error(tmp_path):
    record = CamRecord("a", np.ones((1, 2, 2), np.float32), [0], (4, 4))
    write_store(tmp_path / "m.h5", [record], "rollout")
    with CamReader(tmp_path / "m.h5") as reader, pytest.raises(MissingImageError) as info:
        reader.raw("zz")
    assert isinstance(info.value, KeyError) and isinstance(info.value, UserError)
    assert str(info.value).startswith("image id 'zz' is not in cam store")
    assert "rerun extract_cams" in str(info.value)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"cannot open cam store .*bad\.h5.*rerun extract_cams"):
        CamReader(tmp_path / "bad.h5")


def test_an_unreadable_segmenter_names_the_file(tmp_path):
    (tmp_path / "segmenter.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"segmenter file .*segmenter\.pt is unreadable"):
        load_segmenter(tmp_path / "segmenter.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_user_error():
    with pytest.raises(UserError, match="set the config key device to auto"):
        select_device("cuda")


def test_the_patch_size_of_a_plain_vit_and_of_a_hybrid():
    assert patch_size({"backbone": "vit_tiny_patch16_224"}) == 16
    assert patch_size({"backbone": "vit_tiny_patch16_224", "patch_size": 8}) == 8
    assert patch_size({"backbone": "hybrid_tiny", "patch_size": 8}) is None
    check_patch_multiple({"backbone": "vit_tiny_patch16_224"}, 96)
    check_patch_multiple({"backbone": "hybrid_tiny"}, 90)  # hybrids: the stem decides
    with pytest.raises(ClassifierConfigError, match=r"config key affinity.net.crop_size: 100 is"):
        check_patch_multiple({"backbone": "vit_tiny_patch16_224"}, 100, "affinity.net.crop_size")


# ------------------------------------------------------------------ --log (every rule passes it)

LOGGED_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
from wsss_core.cli import UserError, script_main

@script_main
def main(argv=None):
    print("to stdout", flush=True)
    os.write(2, b"C-level stderr\\n")  # what tqdm or a C library writes to descriptor 2
    if argv and argv[0] == "fail":
        raise UserError("image x.png is broken; replace it")
    if argv and argv[0] == "bug":
        raise KeyError("a bug")
    return 0

raise SystemExit(main())
"""


@pytest.mark.parametrize("kind", ["ok", "fail", "bug"])
def test_log_option_sends_everything_to_the_log_and_the_error_line_also_to_stderr(kind, tmp_path):
    """``--log PATH``: descriptors 1 and 2 go to PATH (print, logging, C-level writes); a failed
    script also prints the log's last line (its one-line error, or the traceback's last line)
    to the terminal's stderr, and nothing else."""
    import subprocess
    import sys

    script = tmp_path / "logged.py"
    script.write_text(LOGGED_SCRIPT.format(repo=str(Path(__file__).resolve().parents[2])))
    log = tmp_path / "logs" / "job.log"
    proc = subprocess.run(
        [sys.executable, str(script), kind, "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = log.read_text()
    assert "to stdout" in text and "C-level stderr" in text
    assert proc.stdout == ""
    if kind == "ok":
        assert proc.returncode == 0 and proc.stderr == ""
    elif kind == "fail":
        assert proc.returncode == EXIT_EXPECTED
        line = "logged: error: image x.png is broken; replace it"
        assert text.splitlines()[-1] == line
        assert proc.stderr.splitlines() == [line]
    else:
        assert proc.returncode == 1
        assert "Traceback" in text and text.splitlines()[-1] == "KeyError: 'a bug'"
        assert proc.stderr.splitlines() == ["KeyError: 'a bug'"]
