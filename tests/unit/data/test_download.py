"""Downloads over a loopback HTTP server (resume, checksums) and safe tar extraction."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import RangeServer
from workflow_utils import load_script

from wsss_core.data.download import (
    SBD_BENCHMARK,
    VOC2012_TRAINVAL,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download,
    file_digests,
    safe_extract,
)

CONTENT = {
    "VOCdevkit/VOC2012/readme.txt": b"hello VOC\n",
    "VOCdevkit/VOC2012/sub/data.bin": np.random.default_rng(0).bytes(150_000),
    "VOCdevkit/other.txt": b"outside the prefix\n",
}


def make_tar(entries: dict[str, bytes], mode: str = "w:gz") -> bytes:
    """A tar archive (in memory) holding regular files with the given contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_tar_with(members: list[tarfile.TarInfo]) -> bytes:
    """A tar.gz of special members (links, devices, odd names; files get 3 bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info in members:
            if info.isfile():
                info.size = 3
                tar.addfile(info, io.BytesIO(b"bad"))
            else:
                tar.addfile(info)
    return buffer.getvalue()


ARCHIVE = make_tar(CONTENT)
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()
MD5 = hashlib.md5(ARCHIVE).hexdigest()


def fast(**kwargs):
    """Download options for tests: small chunks, short timeout, no progress bar, no waits."""
    return {"chunk_size": 4096, "timeout": 5, "progress": False, "retry_wait": 0, **kwargs}


def test_official_sources_carry_documented_checksums():
    assert VOC2012_TRAINVAL.md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert VOC2012_TRAINVAL.url.endswith("/VOCtrainval_11-May-2012.tar")
    assert SBD_BENCHMARK.md5 == "82b4d87ceb2ed10f6038a1cba92111cb"
    assert SBD_BENCHMARK.url.endswith("/benchmark.tgz")


def test_good_archive_downloads_verifies_and_extracts(tmp_path):
    dest = tmp_path / "dl" / "archive.tgz"
    with RangeServer({"/a.tgz": ARCHIVE}) as server:
        assert download(server.url("/a.tgz"), dest, sha256=SHA256, **fast()) == dest
        assert dest.read_bytes() == ARCHIVE
        assert not dest.with_name("archive.tgz.part").exists()
        # already there with the right checksum: no second request
        download(server.url("/a.tgz"), dest, md5=MD5, **fast())
        assert len(server.requests) == 1
        assert server.requests[0]["range"] is None
    out = safe_extract(dest, tmp_path / "voc", strip_prefix="VOCdevkit/VOC2012", progress=False)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["readme.txt", "sub/data.bin"]
    assert (out / "readme.txt").read_bytes() == CONTENT["VOCdevkit/VOC2012/readme.txt"]
    assert (out / "sub/data.bin").read_bytes() == CONTENT["VOCdevkit/VOC2012/sub/data.bin"]
    # no prefix: everything, with the original names
    full = safe_extract(dest, tmp_path / "full", progress=False)
    for name, data in CONTENT.items():
        assert (full / name).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl", "full", "voc"]


def test_wrong_checksum_leaves_nothing(tmp_path):
    dest = tmp_path / "archive.tgz"
    wrong = "0" * 32
    with RangeServer({"/a.tgz": ARCHIVE}) as server:
        with pytest.raises(ChecksumError) as info:
            download(server.url("/a.tgz"), dest, md5=wrong, **fast())
    message = str(info.value)
    assert "archive.tgz" in message and wrong in message and MD5 in message
    assert list(tmp_path.iterdir()) == []


def test_existing_file_with_wrong_checksum_is_kept_and_reported(tmp_path):
    dest = tmp_path / "archive.tgz"
    dest.write_bytes(b"something else")
    with pytest.raises(ChecksumError, match="already exists"):
        download("http://127.0.0.1:9/never-contacted", dest, sha256=SHA256, **fast())
    assert dest.read_bytes() == b"something else"


def test_interrupted_transfer_is_resumed_with_range(tmp_path):
    dest = tmp_path / "archive.tgz"
    cut = 10_000
    with RangeServer({"/a.tgz": ARCHIVE}, cut_after=cut) as server:
        with pytest.raises(DownloadError, match="run again to resume"):
            download(server.url("/a.tgz"), dest, sha256=SHA256, **fast(retries=0))
        part = tmp_path / "archive.tgz.part"
        assert part.stat().st_size == cut
        assert not dest.exists()
        download(server.url("/a.tgz"), dest, sha256=SHA256, **fast(retries=0))
        assert [r["range"] for r in server.requests] == [None, f"bytes={cut}-"]
        assert [r["status"] for r in server.requests] == [200, 206]
    assert dest.read_bytes() == ARCHIVE
    assert not part.exists()


def test_interrupted_transfer_is_retried_within_one_call(tmp_path):
    dest = tmp_path / "archive.tgz"
    with RangeServer({"/a.tgz": ARCHIVE}, cut_after=5000) as server:
        download(server.url("/a.tgz"), dest, md5=MD5, **fast(retries=1))
        assert [r["range"] for r in server.requests] == [None, "bytes=5000-"]
    assert dest.read_bytes() == ARCHIVE


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    dest = tmp_path / "archive.tgz"
    part = tmp_path / "archive.tgz.part"
    part.write_bytes(b"x" * 777)  # a stale partial file that must not survive
    with RangeServer({"/a.tgz": ARCHIVE}, ignore_range=True) as server:
        download(server.url("/a.tgz"), dest, sha256=SHA256, **fast())
        assert server.requests == [{"path": "/a.tgz", "range": "bytes=777-", "status": 200}]
    assert dest.read_bytes() == ARCHIVE


def test_stale_part_of_another_file_is_fetched_again_from_zero(tmp_path):
    dest = tmp_path / "archive.tgz"
    (tmp_path / "archive.tgz.part").write_bytes(b"y" * 1234)  # left by another download
    with RangeServer({"/a.tgz": ARCHIVE}) as server:
        download(server.url("/a.tgz"), dest, md5=MD5, **fast())
        assert [(r["range"], r["status"]) for r in server.requests] == [
            ("bytes=1234-", 206),
            (None, 200),
        ]
    assert dest.read_bytes() == ARCHIVE


def test_complete_part_answered_416_is_verified_and_kept(tmp_path):
    dest = tmp_path / "archive.tgz"
    (tmp_path / "archive.tgz.part").write_bytes(ARCHIVE)
    with RangeServer({"/a.tgz": ARCHIVE}) as server:
        download(server.url("/a.tgz"), dest, sha256=SHA256, **fast())
        assert [r["status"] for r in server.requests] == [416]
    assert dest.read_bytes() == ARCHIVE


def test_missing_url_is_a_clear_error_without_retries(tmp_path):
    with RangeServer({}) as server:
        with pytest.raises(DownloadError, match="404"):
            download(server.url("/nope.tgz"), tmp_path / "x.tgz", **fast(retries=3))
        assert len(server.requests) == 1


def test_local_path_and_file_url_are_copied(tmp_path):
    source = tmp_path / "pre-downloaded.tgz"
    source.write_bytes(ARCHIVE)
    a = download(str(source), tmp_path / "a.tgz", md5=MD5, **fast())
    b = download(source.as_uri(), tmp_path / "b.tgz", sha256=SHA256, **fast())
    assert a.read_bytes() == ARCHIVE and b.read_bytes() == ARCHIVE
    with pytest.raises(DownloadError, match="does not exist"):
        download(str(tmp_path / "absent.tgz"), tmp_path / "c.tgz", **fast())


def test_malformed_checksum_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="md5 checksum must be 32 hex digits"):
        download("file:///unused", tmp_path / "x", md5="abc", **fast())


def test_file_digests_match_hashlib(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(ARCHIVE)
    assert file_digests(path, ("md5", "sha256"), chunk_size=1000) == {"md5": MD5, "sha256": SHA256}


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


UNSAFE = {
    "dotdot": ([tarfile.TarInfo("ok.txt"), tarfile.TarInfo("../evil")], "../evil"),
    "nested_dotdot": ([tarfile.TarInfo("a/../../evil")], "a/../../evil"),
    "absolute": ([tarfile.TarInfo("/tmp/wsss-evil-absolute")], "/tmp/wsss-evil-absolute"),
    "symlink_outside": ([_symlink("link", "../../outside")], "link"),
    "symlink_absolute": ([_symlink("link", "/etc")], "link"),
    # each link looks harmless alone; together they climb out of the target
    "symlink_chain": ([_symlink("s1", "."), _symlink("s2", "s1/..")], "s2"),
    "write_through_link": (
        [tarfile.TarInfo("d/x"), _symlink("d/up", ".."), _symlink("esc", "d/up/..")],
        "esc",
    ),
    "hardlink_outside": ([_hardlink("hl", "../outside")], "hl"),
    "device": ([_device("dev/null")], "dev/null"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_are_refused(tmp_path, case):
    members, bad_name = UNSAFE[case]
    archive = tmp_path / "bad.tgz"
    archive.write_bytes(make_tar_with(members))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, work / "target", progress=False)
    assert f"'{bad_name}'" in str(info.value)
    # nothing left behind: no target, no temporary folder, nothing written outside
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tgz", "work"]
    assert not Path("/tmp/wsss-evil-absolute").exists()


def test_links_inside_the_target_are_extracted(tmp_path):
    members = [tarfile.TarInfo("top/dir/file.txt"), _symlink("top/dir/alias", "file.txt")]
    members.append(_hardlink("top/copy.txt", "top/dir/file.txt"))
    members.append(_symlink("top/up", "dir/.."))
    archive = tmp_path / "links.tgz"
    archive.write_bytes(make_tar_with(members))
    out = safe_extract(archive, tmp_path / "out", strip_prefix="top", progress=False)
    assert (out / "dir" / "alias").is_symlink()
    assert (out / "dir" / "alias").read_bytes() == b"bad"
    assert (out / "copy.txt").read_bytes() == b"bad"
    assert os.path.realpath(out / "up") == os.path.realpath(out)


def test_uncompressed_tar_and_reextraction_replaces_target(tmp_path):
    archive = tmp_path / "plain.tar"
    archive.write_bytes(make_tar({"x/a.txt": b"one"}, mode="w"))
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    safe_extract(archive, target, progress=False)
    assert sorted(p.name for p in target.iterdir()) == ["x"]
    assert (target / "x" / "a.txt").read_bytes() == b"one"


def test_truncated_archive_is_an_error_and_leaves_no_target(tmp_path):
    archive = tmp_path / "cut.tgz"
    archive.write_bytes(ARCHIVE[: len(ARCHIVE) // 2])
    with pytest.raises(ValueError, match="truncated"):
        safe_extract(archive, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tgz"]


def test_prefix_matching_nothing_is_an_error(tmp_path):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(ARCHIVE)
    with pytest.raises(ValueError, match="no members under 'benchmark_RELEASE/dataset'"):
        safe_extract(archive, tmp_path / "out", strip_prefix="benchmark_RELEASE/dataset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz"]


def test_download_file_script(tmp_path, capsys):
    main = load_script("data_download").main
    source = tmp_path / "src.tgz"
    source.write_bytes(ARCHIVE)
    out = tmp_path / "out" / "a.tgz"
    assert main(["--url", source.as_uri(), "--out", str(out), "--md5", MD5, "--no-progress"]) == 0
    assert out.read_bytes() == ARCHIVE
    bad = tmp_path / "bad.tgz"
    capsys.readouterr()
    # an expected failure: one last line naming the file, exit code 2, nothing left behind
    assert main(["--url", str(source), "--out", str(bad), "--sha256", "1" * 64]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"data_download: error: checksum mismatch for {bad} ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src.tgz"]


# ----------------------------------------------------------------------------- zip archives


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    """A zip with ``members`` (name -> bytes; a name ending in / is a folder) and symlink entries
    (name -> target, stored as Unix symlinks the way `zip -y` does)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_zip_extracts_under_its_prefix(tmp_path):
    content = {
        "train2014/": b"",
        "train2014/COCO_train2014_000000000009.jpg": np.random.default_rng(1).bytes(70_000),
        "train2014/sub/b.txt": b"b",
        "other/c.txt": b"outside the prefix",
    }
    archive = make_zip(tmp_path / "train2014.zip", content)
    out = safe_extract(archive, tmp_path / "out", strip_prefix="train2014", progress=False)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "COCO_train2014_000000000009.jpg",
        "sub",
        "sub/b.txt",
    ]
    jpg = out / "COCO_train2014_000000000009.jpg"
    assert jpg.read_bytes() == content["train2014/COCO_train2014_000000000009.jpg"]
    assert (out / "sub" / "b.txt").read_bytes() == b"b"


ZIP_UNSAFE = {
    "dotdot": ({"a/../../escaped.txt": b"x"}, {}, "a/../../escaped.txt", "'..' in the path"),
    "absolute": ({"/tmp/wsss-evil-zip.txt": b"x"}, {}, "/tmp/wsss-evil-zip.txt", "absolute"),
    "drive": ({"C:/evil.txt": b"x"}, {}, "C:/evil.txt", "absolute"),
    "symlink": ({"a/ok.txt": b"x"}, {"a/link": "../../etc/passwd"}, "a/link", "symlinks"),
}


@pytest.mark.parametrize("case", sorted(ZIP_UNSAFE))
def test_unsafe_zip_members_are_refused_before_anything_is_written(tmp_path, case):
    members, links, bad_name, reason = ZIP_UNSAFE[case]
    # a good member comes first: nothing at all is written, the check runs over the whole list
    archive = make_zip(tmp_path / "bad.zip", {"a/first.txt": b"1", **members}, links)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        safe_extract(archive, work / "target", progress=False)
    assert f"'{bad_name}'" in str(info.value)
    assert list(work.iterdir()) == []
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not Path("/tmp/wsss-evil-zip.txt").exists()


def test_truncated_zip_is_an_error_and_leaves_no_target(tmp_path):
    whole = make_zip(tmp_path / "whole.zip", {"a/x.bin": np.random.default_rng(2).bytes(50_000)})
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[:30_000])
    with pytest.raises(ValueError, match="cut.zip is truncated or not a zip archive"):
        safe_extract(cut, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
