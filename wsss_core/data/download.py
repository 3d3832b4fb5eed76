"""Resumable, checksum-verified downloads and safe tar extraction.

``download`` streams a URL to ``<dest>.part``, resumes a partial ``.part`` with
an HTTP Range request, verifies the checksum and only then renames the file to
``dest``: a file at ``dest`` is always complete and verified. ``file://`` URLs
and plain local paths are copied the same way (offline clusters with
pre-downloaded archives).

``safe_extract`` unpacks a tar archive (plain or gzip) or a zip archive (COCO's) into a
temporary directory beside the target and renames it when complete; members that would
land outside the target (absolute paths, ``..``, links pointing outside) and
device files (and, in zip archives, any symlink) are refused before anything is written
for them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from wsss_core.config import schema_default
from wsss_core.io import atomic_directory

log = logging.getLogger(__name__)

USER_AGENT = "wsss-download/0.1 (+python urllib)"
_HEX_LENGTHS = {"md5": 32, "sha256": 64}


class DownloadError(RuntimeError):
    """A download failed (bad URL, server error, interrupted transfer)."""


class ChecksumError(DownloadError):
    """A downloaded or existing file does not have the expected checksum."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target or is a device file."""


class _Interrupted(DownloadError):
    """The transfer stopped early; the ``.part`` file keeps what arrived."""


@dataclass(frozen=True)
class ArchiveSource:
    """An official dataset archive: where to get it, its checksum, what to extract."""

    name: str
    url: str
    filename: str
    md5: str
    strip_prefix: str


# the official URLs and checksums are the defaults of config keys data.voc2012.*
VOC2012_TRAINVAL = ArchiveSource(
    name="voc2012",
    url=schema_default("data.voc2012.voc_url"),
    filename="VOCtrainval_11-May-2012.tar",
    md5=schema_default("data.voc2012.voc_md5"),
    strip_prefix="VOCdevkit/VOC2012",
)
SBD_BENCHMARK = ArchiveSource(
    name="sbd",
    url=schema_default("data.voc2012.sbd_url"),
    filename="benchmark.tgz",
    md5=schema_default("data.voc2012.sbd_md5"),
    strip_prefix="benchmark_RELEASE/dataset",
)
SOURCES = {source.name: source for source in (VOC2012_TRAINVAL, SBD_BENCHMARK)}


# ----------------------------------------------------------------------------- checksums


def _expected_digests(sha256: str | None, md5: str | None) -> dict[str, str]:
    """Validate the given checksums and return them as {algorithm: lowercase hex}."""
    expected: dict[str, str] = {}
    for algorithm, value in (("sha256", sha256), ("md5", md5)):
        if value is None:
            continue
        value = value.strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{_HEX_LENGTHS[algorithm]}}}", value):
            raise ValueError(
                f"{algorithm} checksum must be {_HEX_LENGTHS[algorithm]} hex digits, "
                f"got '{value}'; fix the checksum in the config"
            )
        expected[algorithm] = value
    return expected


def file_digests(
    path: str | os.PathLike, algorithms: tuple[str, ...] = ("sha256",), chunk_size: int = 1 << 20
) -> dict[str, str]:
    """Hex digests of a file for each algorithm, computed in one pass."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _mismatches(path: Path, expected: dict[str, str]) -> list[tuple[str, str, str]]:
    """(algorithm, expected, actual) for every checksum of ``path`` that differs."""
    actual = file_digests(path, tuple(expected))
    return [(name, want, actual[name]) for name, want in expected.items() if actual[name] != want]


def _describe(mismatches: list[tuple[str, str, str]]) -> str:
    return "; ".join(f"{name} is {got}, expected {want}" for name, want, got in mismatches)


# ----------------------------------------------------------------------------- download


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
    progress: bool = True,
    retries: int = 2,
    retry_wait: float = 5.0,
) -> Path:
    """Fetch ``url`` into ``dest``, resuming a partial download, and verify its checksum.

    ``url`` is http(s), ``file://`` or a local path. Bytes go to ``<dest>.part``;
    an existing ``.part`` is resumed with a Range request (a server answering 200
    restarts from zero, 416 means the part is already complete). After an
    interrupted transfer the call retries ``retries`` times (waiting
    ``retry_wait * attempt`` seconds), then raises, keeping the ``.part`` for the
    next call to resume. A checksum mismatch after resuming a ``.part`` from an
    earlier call fetches the whole file once more; a mismatch otherwise deletes
    the ``.part`` and raises ``ChecksumError``; on success it is renamed onto ``dest``. An
    existing ``dest`` with the right checksum is left alone.
    """
    dest = Path(dest)
    expected = _expected_digests(sha256, md5)
    if dest.exists():
        if not expected:
            log.info("%s exists (no checksum given to verify it)", dest)
            return dest
        bad = _mismatches(dest, expected)
        if not bad:
            log.info("%s exists with the expected checksum; nothing to do", dest)
            return dest
        raise ChecksumError(
            f"{dest} already exists but its {_describe(bad)}; delete it to download it "
            f"again from {url}, or correct the expected checksum"
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    local = _local_source(url)
    resumed = local is None and part.exists() and part.stat().st_size > 0
    if local is not None:
        _copy_local(local, part, chunk_size, progress)
    else:
        _fetch_with_retries(url, part, chunk_size, timeout, progress, retries, retry_wait)

    if expected:
        bad = _mismatches(part, expected)
        if bad and resumed:
            # the .part left by an earlier run may hold bytes of another file (a changed
            # mirror, a replaced archive): fetch the whole file once more before giving up
            log.warning(
                "%s after resuming %s; downloading it again from zero", _describe(bad), part
            )
            part.unlink()
            _fetch_with_retries(url, part, chunk_size, timeout, progress, retries, retry_wait)
            bad = _mismatches(part, expected)
        if bad:
            part.unlink()
            raise ChecksumError(
                f"checksum mismatch for {dest} downloaded from {url}: {_describe(bad)}. "
                "The downloaded file was deleted. Check that the URL (or mirror) serves the "
                "official archive and that the expected checksum is right, then run again."
            )
    else:
        log.warning("no checksum given for %s; the file is not verified", dest)
    os.replace(part, dest)
    log.info("downloaded %s (%d bytes)", dest, dest.stat().st_size)
    return dest


def _local_source(url: str) -> Path | None:
    """The local file behind a ``file://`` URL or plain path; None for http(s)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"file URL {url} names host '{parsed.netloc}'; use file:///path")
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "":
        return Path(url)
    raise DownloadError(f"unsupported URL scheme '{parsed.scheme}' in {url}; use http(s), file://")


def _copy_local(source: Path, part: Path, chunk_size: int, progress: bool) -> None:
    """Copy a local file to ``part`` with a progress bar."""
    if not source.is_file():
        raise DownloadError(f"local source {source} does not exist or is not a file")
    total = source.stat().st_size
    with (
        open(source, "rb") as src,
        open(part, "wb") as out,
        tqdm(total=total, unit="B", unit_scale=True, desc=part.name, disable=not progress) as bar,
    ):
        while chunk := src.read(chunk_size):
            out.write(chunk)
            bar.update(len(chunk))


def _retryable(err: Exception) -> bool:
    """HTTP 5xx/408/429, timeouts, resets and interrupted transfers are worth a retry."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in (408, 429)
    return True


def _fetch_with_retries(
    url: str,
    part: Path,
    chunk_size: int,
    timeout: float,
    progress: bool,
    retries: int,
    retry_wait: float,
) -> None:
    for attempt in range(retries + 1):
        try:
            _fetch_http(url, part, chunk_size, timeout, progress)
            return
        except (_Interrupted, OSError, http.client.HTTPException) as err:
            have = part.stat().st_size if part.exists() else 0
            if not _retryable(err):
                raise DownloadError(f"cannot download {url}: {err}; check the URL") from err
            if attempt == retries:
                raise DownloadError(
                    f"download of {url} failed after {retries + 1} attempt(s): {err}. "
                    f"{have} bytes are kept in {part}; run again to resume."
                ) from err
            wait = retry_wait * (attempt + 1)
            log.warning("%s (%d bytes so far); retrying in %.0f s", err, have, wait)
            time.sleep(wait)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header, None where absent."""
    if not value:
        return None, None
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _fetch_http(url: str, part: Path, chunk_size: int, timeout: float, progress: bool) -> None:
    """One HTTP transfer into ``part``, resuming from its current size when possible."""
    for _restart in range(2):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code != 416 or not offset:
                raise
            _, total = _content_range(err.headers.get("Content-Range"))
            err.close()
            if total == offset:
                log.info("%s is already complete (%d bytes)", part, offset)
                return
            log.warning("server refused to resume %s at byte %d; restarting", part, offset)
            part.unlink()
            continue
        with response:
            if offset and response.status == 206:
                start, _ = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    log.warning("server resumed at byte %s, not %d; restarting", start, offset)
                    part.unlink()
                    continue
                log.info("resuming %s from byte %d", part, offset)
                mode = "ab"
            else:
                if offset:
                    log.warning("server ignored the Range request; restarting %s from zero", part)
                offset = 0
                mode = "wb"
            _stream(response, part, mode, offset, chunk_size, progress)
            return
    raise DownloadError(f"server for {url} cannot resume {part} consistently; delete it and retry")


def _stream(response, part: Path, mode: str, offset: int, chunk_size: int, progress: bool) -> None:
    """Copy the response body to ``part``; raise _Interrupted on a short body."""
    length_header = response.headers.get("Content-Length")
    length = int(length_header) if length_header is not None else None
    total = offset + length if length is not None else None
    received = 0
    with (
        open(part, mode) as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            desc=part.name,
            disable=not progress,
        ) as bar,
    ):
        try:
            while chunk := response.read(chunk_size):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            done = offset + received
            raise _Interrupted(f"transfer interrupted after {done} bytes ({err})") from err
    if length is not None and received < length:
        raise _Interrupted(f"transfer interrupted after {offset + received} of {total} bytes")


# ----------------------------------------------------------------------------- extraction


def _clean_parts(name: str) -> list[str]:
    """Path components of an archive name without empty and '.' components."""
    return [p for p in PurePosixPath(name).parts if p not in ("", ".")]


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _plan_member(
    member: tarfile.TarInfo, prefix: list[str], root: str, archive: Path
) -> tarfile.TarInfo | None:
    """The member renamed relative to the target, None to skip it; refuses unsafe members."""

    def refuse(reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"{archive}: refusing member '{member.name}': {reason}. The archive is corrupt or "
            "malicious; do not use it - download it again from the official source."
        )

    if member.isdev():
        raise refuse("device files and pipes are not extracted")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise refuse(f"unsupported member type {member.type!r}")
    if member.name.startswith(("/", "\\")) or os.path.isabs(member.name):
        raise refuse("absolute path")
    parts = _clean_parts(member.name)
    if ".." in parts:
        raise refuse("'..' in the path")
    if prefix:
        if parts[: len(prefix)] != prefix:
            return None
        parts = parts[len(prefix) :]
    if not parts:
        return None
    name = "/".join(parts)
    dest = os.path.join(root, *parts)
    if not _inside(root, os.path.realpath(dest)):
        raise refuse("path leads outside the target directory through a link")

    linkname = member.linkname
    if member.issym():
        if linkname.startswith(("/", "\\")) or os.path.isabs(linkname):
            raise refuse(f"symlink to absolute path '{linkname}'")
        if not _inside(root, os.path.realpath(os.path.join(os.path.dirname(dest), linkname))):
            raise refuse(f"symlink to '{linkname}' points outside the target directory")
    elif member.islnk():
        link_parts = _clean_parts(linkname)
        if linkname.startswith(("/", "\\")) or ".." in link_parts:
            raise refuse(f"hard link to '{linkname}' outside the archive")
        if prefix:
            if link_parts[: len(prefix)] != prefix:
                raise refuse(f"hard link to '{linkname}' outside the extracted prefix")
            link_parts = link_parts[len(prefix) :]
        linkname = "/".join(link_parts)
        if not link_parts or not _inside(root, os.path.realpath(os.path.join(root, *link_parts))):
            raise refuse(f"hard link to '{member.linkname}' points outside the target directory")
    return member.replace(name=name, linkname=linkname, deep=False)


def _extract_tar(archive: Path, prefix: list[str], root: str, bar: tqdm) -> int:
    """Extract the safe members of a tar archive under ``root``; the number extracted."""
    extracted = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            planned = _plan_member(member, prefix, root, archive)
            if planned is None:
                continue
            try:
                tar.extract(planned, root, set_attrs=not planned.isdir(), filter="data")
            except tarfile.FilterError as err:
                raise UnsafeArchiveError(
                    f"{archive}: refusing member '{member.name}': {err}"
                ) from err
            extracted += 1
            bar.update()
    return extracted


def _plan_zip_member(info: zipfile.ZipInfo, prefix: list[str], archive: Path) -> list[str] | None:
    """The path components of a zip member relative to the target, None to skip it (outside
    ``prefix``, or the prefix folder itself); refuses absolute paths, ``..`` and symlinks."""

    def refuse(reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"{archive}: refusing member '{info.filename}': {reason}. The archive is corrupt or "
            "malicious; do not use it - download it again from the official source."
        )

    name = info.filename
    if name.startswith(("/", "\\")) or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        raise refuse("absolute path")
    if "\\" in name:
        raise refuse("backslash in the path")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise refuse("symlinks are not extracted from zip archives")
    # Unix zips record the file type in the high bits (none: a plain file or folder)
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise refuse("device files and pipes are not extracted")
    parts = _clean_parts(name)
    if ".." in parts:
        raise refuse("'..' in the path")
    if prefix:
        if parts[: len(prefix)] != prefix:
            return None
        parts = parts[len(prefix) :]
    return parts or None


def _extract_zip(archive: Path, prefix: list[str], root: str, bar: tqdm) -> int:
    """Extract the safe members of a zip archive under ``root``; the number extracted.

    Every member is checked before any is written (a zip lists its members up front)."""
    with zipfile.ZipFile(archive) as zf:
        planned = [(info, _plan_zip_member(info, prefix, archive)) for info in zf.infolist()]
        extracted = 0
        for info, parts in planned:
            if parts is None:
                continue
            dest = os.path.join(root, *parts)
            if info.is_dir():
                os.makedirs(dest, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            extracted += 1
            bar.update()
    return extracted


# Written into an extraction (with ``stamp=True``) just before it is renamed into place: which
# archive it came from. A folder without it, or with another archive's, is no finished extraction
# of this archive (Snakemake creates the parent folders of a rule's outputs before the rule runs,
# so a folder that merely exists proves nothing).
EXTRACTION_STAMP = ".wsss-extracted.json"


def _archive_identity(archive: Path, strip_prefix: str | None) -> dict:
    info = archive.stat()
    return {
        "archive": archive.name,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "strip_prefix": strip_prefix or "",
    }


def is_extracted(
    archive: str | os.PathLike, target_dir: str | os.PathLike, strip_prefix: str | None = None
) -> bool:
    """True when ``target_dir`` is a finished ``safe_extract(..., stamp=True)`` of ``archive``
    (same name, size and modification time, same prefix)."""
    stamp = Path(target_dir) / EXTRACTION_STAMP
    archive = Path(archive)
    if not stamp.is_file() or not archive.is_file():
        return False
    try:
        found = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return found == _archive_identity(archive, strip_prefix)


def safe_extract(
    archive: str | os.PathLike,
    target_dir: str | os.PathLike,
    strip_prefix: str | None = None,
    *,
    progress: bool = True,
    stamp: bool = False,
) -> Path:
    """Extract a tar (plain, gzip, bz2, xz) or zip archive into ``target_dir``, safely and
    atomically.

    With ``strip_prefix`` (e.g. ``VOCdevkit/VOC2012``) only members under that
    folder are extracted, with the prefix removed; the others are skipped. The
    archive is unpacked into a temporary directory beside ``target_dir`` that
    replaces it when complete, so a killed extraction never looks finished.
    Refused members (``UnsafeArchiveError``, naming the member): absolute
    paths, ``..`` components, symlinks or hard links resolving outside the
    target, device files and pipes (and every symlink of a zip archive). ``stamp`` writes
    ``EXTRACTION_STAMP`` into the finished extraction, so that ``is_extracted`` recognises it
    later.
    """
    archive = Path(archive)
    target = Path(target_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} not found; download it first")
    prefix = _clean_parts(strip_prefix) if strip_prefix else []
    if ".." in prefix:
        raise ValueError(f"strip_prefix '{strip_prefix}' must not contain '..'")
    is_zip = archive.suffix.lower() == ".zip" or zipfile.is_zipfile(archive)
    try:
        with atomic_directory(target) as tmp:
            root = os.path.realpath(tmp)
            with tqdm(unit=" files", desc=f"extract {archive.name}", disable=not progress) as bar:
                if is_zip:
                    extracted = _extract_zip(archive, prefix, root, bar)
                else:
                    extracted = _extract_tar(archive, prefix, root, bar)
            if extracted == 0:
                where = f" under '{strip_prefix}'" if prefix else ""
                raise ValueError(
                    f"archive {archive} has no members{where}; check that it is the right "
                    "archive (and the strip prefix)"
                )
            if stamp:
                identity = _archive_identity(archive, strip_prefix)
                (Path(tmp) / EXTRACTION_STAMP).write_text(json.dumps(identity) + "\n")
    except (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(
            f"archive {archive} is truncated or not a tar archive ({err}); delete it and "
            "download it again"
        ) from err
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"archive {archive} is truncated or not a zip archive ({err}); delete it and "
            "download it again"
        ) from err
    log.info("extracted %d members of %s into %s", extracted, archive, target)
    return target


__all__ = [
    "SBD_BENCHMARK",
    "SOURCES",
    "VOC2012_TRAINVAL",
    "ArchiveSource",
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "EXTRACTION_STAMP",
    "download",
    "file_digests",
    "is_extracted",
    "safe_extract",
]
