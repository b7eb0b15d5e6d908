"""Safe extraction of submission and checkpoint archives (.zip, .tar, .tar.gz).

Archives come from other people, so every member is checked before anything is written:
absolute paths, ``..`` components, links whose target leaves the extracted folder, and device
or FIFO members are refused with a message naming the member. Sizes are counted on the bytes
actually written, not on what the archive declares, so a zip bomb stops at the limit.
Everything is extracted into a staging folder inside the destination and moved into place
only once the whole archive has passed, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import copy
import errno
import gzip
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..contract.constants import MAX_ARCHIVE_BYTES, MAX_UNPACKED_BYTES

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz")
"""Archive kinds the organisers accept, told apart by file name (case-sensitive), as they do.
Their validator refused ``.tgz`` and the final round's worker skipped it, so it is refused here."""

IGNORED_TOP_LEVEL = ("__MACOSX",)
"""Top-level folders that archiving tools add and that are never a submission."""

_CHUNK_BYTES = 1024 * 1024
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


class ArchiveError(Exception):
    """An archive that cannot be used: wrong kind, too large, corrupt, or not a submission."""


class UnsafeArchiveError(ArchiveError):
    """A member that would write outside the destination or is not a plain file/folder/link; names it."""


def archive_kind(archive: Path) -> str:
    """``"zip"``, ``"tar"`` or ``"tar.gz"`` from the file name (case-sensitive); ArchiveError for anything else."""
    name = Path(archive).name
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".tar.gz"):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    if name.lower().endswith((".tgz", ".zip", ".tar", ".tar.gz")):
        raise ArchiveError(
            f"{archive}: the organisers accept only names ending in .zip, .tar or .tar.gz (case-sensitive; their validator "
            "refuses .tgz and the final round skipped it): rename it"
        )
    raise ArchiveError(f"{archive}: unsupported archive type (expected one of {', '.join(ARCHIVE_SUFFIXES)})")


def extract_archive(
    archive: Path,
    destination: Path,
    *,
    max_archive_bytes: int = MAX_ARCHIVE_BYTES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
) -> Path:
    """Extract ``archive`` into ``destination`` (created if needed) and return ``destination``.

    Raises UnsafeArchiveError for a hostile member, ArchiveError for any other problem
    (unknown extension, packed size over ``max_archive_bytes``, unpacked bytes over
    ``max_unpacked_bytes``, corrupt data, a top-level name already present in ``destination``).
    On error nothing extracted is left in ``destination``.
    """
    archive = Path(archive)
    destination = Path(destination)
    kind = archive_kind(archive)
    try:
        packed_bytes = archive.stat().st_size
    except OSError as error:
        raise ArchiveError(f"{archive}: cannot read ({error.strerror or error})") from None
    if packed_bytes > max_archive_bytes:
        raise ArchiveError(f"{archive}: {packed_bytes} bytes packed, over the limit of {_format_bytes(max_archive_bytes)}")

    created_destination = not destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=destination))
    try:
        writer = _StagingWriter(staging, archive, max_unpacked_bytes)
        if kind == "zip":
            _extract_zip(archive, writer)
        else:
            _extract_tar(archive, "r:gz" if kind == "tar.gz" else "r:", writer)
        writer.finish()
        _move_into(staging, destination, archive)
    except OSError as error:
        # e.g. a name the file system refuses: the archive's fault, named, not a traceback.
        _remove_tree(staging)
        if created_destination:
            _remove_tree(destination)
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise  # our disk, not the archive
        raise ArchiveError(f"{archive}: cannot extract ({error.strerror or error}: {str(error.filename or '')[-80:]})") from None
    except BaseException:
        _remove_tree(staging)
        if created_destination:
            _remove_tree(destination)
        raise
    staging.rmdir()
    return destination


def find_submission_root(extracted: Path) -> Path:
    """The folder holding ``metadata.json``: ``extracted`` itself or its single top-level folder.

    ``__MACOSX`` at the top level is ignored, as the organisers ignore it; a dotfile is not
    (their rule: a single top-level folder, else the top level itself), so ``.DS_Store`` beside
    the folder makes the archive invalid. Raises ArchiveError when neither place has
    ``metadata.json`` (the message says what was found instead).
    """
    extracted = Path(extracted)
    if (extracted / "metadata.json").is_file():
        return extracted
    entries = sorted(entry.name for entry in extracted.iterdir() if entry.name not in IGNORED_TOP_LEVEL)
    hidden = [name for name in entries if name.startswith(".")]
    visible = [name for name in entries if not name.startswith(".")]
    if hidden and len(visible) == 1 and (extracted / visible[0] / "metadata.json").is_file():
        raise ArchiveError(
            f"the top level holds {', '.join(hidden[:3])} beside the folder {visible[0]}/: the organisers then look for "
            "metadata.json at the top level and reject the archive; archive the folder without hidden files"
        )
    if not entries:
        raise ArchiveError("the archive is empty: no metadata.json and no submission folder")
    if len(entries) == 1:
        folder = extracted / entries[0]
        if folder.is_dir() and not folder.is_symlink():
            if (folder / "metadata.json").is_file():
                return folder
            raise ArchiveError(f"no metadata.json at the top level of the archive or in its folder {entries[0]}/")
        raise ArchiveError(f"no metadata.json at the top level of the archive (found only {entries[0]})")
    shown = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "")
    raise ArchiveError(
        f"no metadata.json at the top level of the archive, and {len(entries)} top-level entries "
        f"({shown}) where at most one folder is allowed"
    )


def _format_bytes(count: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path an archive member ``name`` may be written to; None for the archive root.

    Raises UnsafeArchiveError when the name is absolute (``/x``, ``C:\\x``) or has a ``..`` part.
    Backslashes count as separators, because Windows tools write them and unzip honours them.
    """
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or _DRIVE_LETTER.match(cleaned):
        raise UnsafeArchiveError(f"member {name!r}: absolute path")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r}: '..' in its path")
    if any("\0" in part for part in parts):
        raise UnsafeArchiveError(f"member {name!r}: NUL byte in its path")
    # Linux file systems take 255 bytes per name and 4096 per path; longer fails when written.
    too_long = next((part for part in parts if len(part.encode("utf-8", errors="surrogateescape")) > _NAME_MAX), None)
    if too_long is not None or len(cleaned.encode("utf-8", errors="surrogateescape")) > _PATH_MAX:
        raise UnsafeArchiveError(f"member {name[:60]!r}...: name longer than the file system allows ({_NAME_MAX} bytes a name)")
    return PurePosixPath(*parts) if parts else None


_NAME_MAX = 255
_PATH_MAX = 3000


@dataclass
class _StagingWriter:
    """Writes checked members under ``root``, counting real bytes against ``max_bytes``."""

    root: Path
    archive: Path
    max_bytes: int
    written_bytes: int = 0

    def __post_init__(self) -> None:
        self.real_root = os.path.realpath(self.root)
        self.directory_modes: dict[Path, int] = {}
        self.links: list[tuple[str, Path]] = []

    def _inside(self, real_path: str) -> bool:
        return real_path == self.real_root or real_path.startswith(self.real_root + os.sep)

    def _target(self, name: str, relative: PurePosixPath) -> Path:
        """The path to write ``relative`` to, after checking that its parent resolves inside root."""
        path = self.root.joinpath(*relative.parts)
        parent = path.parent
        parent.mkdir(parents=True, exist_ok=True)
        if not self._inside(os.path.realpath(parent)):
            raise UnsafeArchiveError(f"member {name!r}: its folder resolves outside the archive through a link")
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        return path

    def directory(self, name: str, relative: PurePosixPath | None, mode: int) -> None:
        if relative is None:
            return
        path = self._target(name, relative)
        path.mkdir(exist_ok=True)
        self.directory_modes[path] = mode

    def file(self, name: str, relative: PurePosixPath | None, source: BinaryIO, declared_bytes: int, mode: int) -> None:
        if relative is None:
            raise UnsafeArchiveError(f"member {name!r}: a file without a name")
        path = self._target(name, relative)
        if path.is_dir():
            raise UnsafeArchiveError(f"member {name!r}: a folder of that name was already extracted")
        member_bytes = 0
        # O_EXCL + O_NOFOLLOW: never write through a link created meanwhile.
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(handle, "wb") as stream:
            while True:
                chunk = source.read(_CHUNK_BYTES)
                if not chunk:
                    break
                member_bytes += len(chunk)
                self.written_bytes += len(chunk)
                if member_bytes > declared_bytes:
                    raise ArchiveError(
                        f"{self.archive}: member {name!r} expands past its declared size of {declared_bytes} bytes "
                        "(a zip bomb or a corrupt archive)"
                    )
                if self.written_bytes > self.max_bytes:
                    raise ArchiveError(
                        f"{self.archive}: unpacks to more than {_format_bytes(self.max_bytes)} "
                        f"(limit reached while extracting {name!r})"
                    )
                stream.write(chunk)
        if member_bytes != declared_bytes:
            raise ArchiveError(f"{self.archive}: member {name!r} is truncated ({member_bytes} of {declared_bytes} bytes)")
        os.chmod(path, _file_mode(mode))

    def symlink(self, name: str, relative: PurePosixPath | None, link_target: str) -> None:
        if relative is None:
            raise UnsafeArchiveError(f"member {name!r}: a link without a name")
        if not link_target or link_target.startswith("/") or _DRIVE_LETTER.match(link_target):
            raise UnsafeArchiveError(f"member {name!r}: link to {link_target!r} points outside the submission folder")
        path = self._target(name, relative)
        resolved = os.path.realpath(os.path.join(os.path.realpath(path.parent), link_target))
        if not self._inside(resolved):
            raise UnsafeArchiveError(f"member {name!r}: link to {link_target!r} points outside the submission folder")
        if path.is_dir():
            raise UnsafeArchiveError(f"member {name!r}: a folder of that name was already extracted")
        os.symlink(link_target, path)
        self.links.append((name, path))

    def hardlink(self, name: str, relative: PurePosixPath | None, link_target: str) -> None:
        if relative is None:
            raise UnsafeArchiveError(f"member {name!r}: a link without a name")
        try:
            source_relative = safe_member_path(link_target)
        except UnsafeArchiveError:
            source_relative = None
        source = self.root.joinpath(*source_relative.parts) if source_relative else None
        if source is None or not self._inside(os.path.realpath(source)):
            raise UnsafeArchiveError(f"member {name!r}: hard link to {link_target!r} points outside the submission folder")
        if not source.is_file() or source.is_symlink():
            raise UnsafeArchiveError(f"member {name!r}: hard link to {link_target!r}, which is not a file extracted before it")
        path = self._target(name, relative)
        size = source.stat().st_size
        self.written_bytes += size
        if self.written_bytes > self.max_bytes:
            raise ArchiveError(
                f"{self.archive}: unpacks to more than {_format_bytes(self.max_bytes)} (limit reached while extracting {name!r})"
            )
        # A copy, not a real hard link: the two names must not share later changes.
        shutil.copyfile(os.path.realpath(source), path, follow_symlinks=False)
        shutil.copymode(os.path.realpath(source), path)

    def finish(self) -> None:
        """Re-check every link once all exist (a chain of links can escape where each alone does not); set folder modes."""
        for name, path in self.links:
            if not self._inside(os.path.realpath(path)):
                raise UnsafeArchiveError(f"member {name!r}: link points outside the submission folder through other links")
        for path, mode in sorted(self.directory_modes.items(), key=lambda item: len(item[0].parts), reverse=True):
            os.chmod(path, _directory_mode(mode))


def _file_mode(mode: int) -> int:
    # Keep the run bits (the entry point needs them), drop setuid/setgid/sticky, keep it readable by its owner.
    return (mode & 0o777) | 0o600 if mode else 0o644


def _directory_mode(mode: int) -> int:
    return (mode & 0o777) | 0o700 if mode else 0o755


def _extract_zip(archive: Path, writer: _StagingWriter) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            declared = sum(info.file_size for info in members)
            if declared > writer.max_bytes:
                raise ArchiveError(
                    f"{archive}: declares {declared} bytes unpacked, over the limit of {_format_bytes(writer.max_bytes)}"
                )
            for info in members:
                _extract_zip_member(bundle, info, writer)
    except zipfile.BadZipFile as error:
        raise ArchiveError(f"{archive}: not a valid zip archive ({error})") from None
    except (zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
        raise ArchiveError(f"{archive}: cannot extract ({error})") from None


def _extract_zip_member(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, writer: _StagingWriter) -> None:
    name = info.filename
    relative = safe_member_path(name)
    unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
    file_type = stat.S_IFMT(unix_mode)
    if info.is_dir() or file_type == stat.S_IFDIR:
        writer.directory(name, relative, stat.S_IMODE(unix_mode))
        return
    if file_type == stat.S_IFLNK:
        if info.file_size > 4096:
            raise UnsafeArchiveError(f"member {name!r}: link target of {info.file_size} bytes")
        writer.symlink(name, relative, bundle.read(info).decode("utf-8", errors="surrogateescape"))
        return
    if file_type not in (0, stat.S_IFREG):
        raise UnsafeArchiveError(f"member {name!r}: {_describe_file_type(file_type)}, not a regular file, folder or link")
    # Read past the declared size on purpose: zipfile would stop there and blame the CRC, hiding a bomb.
    unbounded = copy.copy(info)
    unbounded.file_size = writer.max_bytes + 1
    # zipfile still checks the CRC when the data ends, so a corrupt member raises BadZipFile.
    with bundle.open(unbounded) as source:
        writer.file(name, relative, source, info.file_size, stat.S_IMODE(unix_mode))


def _extract_tar(archive: Path, mode: str, writer: _StagingWriter) -> None:
    try:
        with tarfile.open(archive, mode) as bundle:
            for member in _iter_tar(bundle):
                _extract_tar_member(bundle, member, writer)
    except tarfile.TarError as error:
        raise ArchiveError(f"{archive}: not a valid {mode[2:] or 'tar'} archive ({error})") from None
    except (zlib.error, EOFError, gzip.BadGzipFile) as error:
        raise ArchiveError(f"{archive}: cannot extract, corrupt data ({error})") from None


def _iter_tar(bundle: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = bundle.next()
        if member is None:
            return
        yield member


def _extract_tar_member(bundle: tarfile.TarFile, member: tarfile.TarInfo, writer: _StagingWriter) -> None:
    name = member.name
    relative = safe_member_path(name)
    if member.isdir():
        writer.directory(name, relative, member.mode)
    elif member.issym():
        writer.symlink(name, relative, member.linkname)
    elif member.islnk():
        writer.hardlink(name, relative, member.linkname)
    elif member.isreg():
        if member.size > writer.max_bytes - writer.written_bytes:
            raise ArchiveError(
                f"{writer.archive}: unpacks to more than {_format_bytes(writer.max_bytes)} "
                f"(member {name!r} alone declares {member.size} bytes)"
            )
        source = bundle.extractfile(member)
        assert source is not None  # a regular member always has data
        with source:
            writer.file(name, relative, source, member.size, member.mode)
    elif member.ischr() or member.isblk():
        raise UnsafeArchiveError(f"member {name!r}: device file, not allowed in a submission")
    elif member.isfifo():
        raise UnsafeArchiveError(f"member {name!r}: FIFO, not allowed in a submission")
    else:
        raise UnsafeArchiveError(f"member {name!r}: unsupported member type {member.type!r}")


def _describe_file_type(file_type: int) -> str:
    if file_type in (stat.S_IFCHR, stat.S_IFBLK):
        return "device file"
    if file_type == stat.S_IFIFO:
        return "FIFO"
    if file_type == stat.S_IFSOCK:
        return "socket"
    return f"file type {oct(file_type)}"


def _move_into(staging: Path, destination: Path, archive: Path) -> None:
    entries = sorted(staging.iterdir())
    clashes = [entry.name for entry in entries if os.path.lexists(destination / entry.name)]
    if clashes:
        raise ArchiveError(f"{archive}: {destination / clashes[0]} already exists; extract into an empty folder")
    moved: list[Path] = []
    try:
        for entry in entries:
            os.rename(entry, destination / entry.name)
            moved.append(destination / entry.name)
    except BaseException:
        for path in moved:
            os.rename(path, staging / path.name)
        raise


def _remove_tree(path: Path) -> None:
    # Extracted folders always keep their owner's rwx bits (_directory_mode), so rmtree can remove them.
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def extracted_archive(archive: Path, **limits: int) -> Iterator[Path]:
    """Extract ``archive`` into a fresh temporary folder for the duration of a ``with`` block."""
    folder = Path(tempfile.mkdtemp(prefix="nips_adv_archive_"))
    try:
        yield extract_archive(archive, folder / "extracted", **limits)
    finally:
        _remove_tree(folder)
