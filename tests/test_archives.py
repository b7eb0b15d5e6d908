"""Safe extraction: good archives come out intact (run bits included), hostile ones are refused by name."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest

from nips_adv.submission.archives import (
    ArchiveError,
    UnsafeArchiveError,
    extract_archive,
    extracted_archive,
    find_submission_root,
    safe_member_path,
)

MiB = 1024 * 1024


def add_tar_file(bundle: tarfile.TarFile, name: str, data: bytes = b"x", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    bundle.addfile(info, io.BytesIO(data))


def add_tar_special(bundle: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    bundle.addfile(info)


def add_zip_file(bundle: zipfile.ZipFile, name: str, data: bytes = b"x", mode: int = 0o644, kind: int = stat.S_IFREG) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (kind | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    bundle.writestr(info, data)


def make_submission_tar(path: Path, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as bundle:
        add_tar_special(bundle, "sub", tarfile.DIRTYPE)
        add_tar_file(bundle, "sub/metadata.json", b"{}")
        add_tar_file(bundle, "sub/run_attack.sh", b"#!/bin/sh\n", mode=0o755)
        add_tar_file(bundle, "sub/model/weights.bin", os.urandom(3000))
        add_tar_special(bundle, "sub/model/latest", tarfile.SYMTYPE, linkname="weights.bin")
        add_tar_special(bundle, "sub/copy.bin", tarfile.LNKTYPE, linkname="sub/model/weights.bin")
    return path


@pytest.mark.parametrize("name, mode", [("good.tar.gz", "w:gz"), ("good.tar", "w")])
def test_tar_extracts_files_modes_and_links(tmp_path: Path, name: str, mode: str) -> None:
    archive = make_submission_tar(tmp_path / name, mode)
    destination = extract_archive(archive, tmp_path / "out")
    root = find_submission_root(destination)
    assert root == destination / "sub"
    assert (root / "run_attack.sh").stat().st_mode & 0o777 == 0o755
    assert (root / "metadata.json").stat().st_mode & 0o111 == 0
    assert os.readlink(root / "model" / "latest") == "weights.bin"
    assert (root / "copy.bin").read_bytes() == (root / "model" / "weights.bin").read_bytes()
    assert sorted(path.name for path in destination.iterdir()) == ["sub"]  # staging folder gone


def test_zip_keeps_run_bit_and_ignores_macosx(tmp_path: Path) -> None:
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        add_zip_file(bundle, "metadata.json", b"{}")
        add_zip_file(bundle, "run_defense.sh", b"#!/bin/sh\n", mode=0o755)
        add_zip_file(bundle, "__MACOSX/._run_defense.sh", b"junk")
        add_zip_file(bundle, "link", b"run_defense.sh", mode=0o777, kind=stat.S_IFLNK)
    destination = extract_archive(archive, tmp_path / "out")
    assert find_submission_root(destination) == destination
    assert os.access(destination / "run_defense.sh", os.X_OK)
    assert os.readlink(destination / "link") == "run_defense.sh"


def test_zip_without_unix_modes_gets_plain_files(tmp_path: Path) -> None:
    archive = tmp_path / "windows.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("folder\\run_attack.sh", b"#!/bin/sh\n")
    destination = extract_archive(archive, tmp_path / "out")
    script = destination / "folder" / "run_attack.sh"
    assert script.read_bytes() == b"#!/bin/sh\n"
    assert script.stat().st_mode & 0o111 == 0


def test_submission_root_single_folder_macosx_and_dotfiles(tmp_path: Path) -> None:
    (tmp_path / "one" / "sub").mkdir(parents=True)
    (tmp_path / "one" / "sub" / "metadata.json").write_text("{}")
    (tmp_path / "one" / "__MACOSX").mkdir()
    assert find_submission_root(tmp_path / "one") == tmp_path / "one" / "sub"
    # The organisers' rule (submission_validator_lib.py: entries other than __MACOSX; one folder, else the top level).
    (tmp_path / "one" / ".DS_Store").write_text("")
    organisers_entries = [d for d in os.listdir(tmp_path / "one") if d != "__MACOSX"]
    organisers_root = tmp_path / "one" / organisers_entries[0] if len(organisers_entries) == 1 else tmp_path / "one"
    assert not (organisers_root / "metadata.json").is_file()  # INVALID for them
    with pytest.raises(ArchiveError, match=r"\.DS_Store beside the folder sub/"):
        find_submission_root(tmp_path / "one")


@pytest.mark.parametrize("name", ["s.tgz", "s.ZIP", "s.TAR.GZ"])
def test_archive_names_the_organisers_refuse(tmp_path: Path, name: str) -> None:
    organisers_suffixes = [".zip", ".tar", ".tar.gz"]  # their EXTRACT_COMMAND keys, matched with str.endswith
    assert not any(name.endswith(suffix) for suffix in organisers_suffixes)
    make_submission_tar(tmp_path / "s.tar.gz").rename(tmp_path / name)
    with pytest.raises(ArchiveError, match="only names ending in .zip, .tar or .tar.gz"):
        extract_archive(tmp_path / name, tmp_path / "out")


class RootCase(NamedTuple):
    entries: tuple[str, ...]
    message: str


@pytest.mark.parametrize(
    "case",
    [
        RootCase((), "empty"),
        RootCase(("a/", "b/"), "at most one folder"),
        RootCase(("sub/",), "in its folder sub/"),
        RootCase(("notes.txt",), "found only notes.txt"),
    ],
)
def test_submission_root_errors(tmp_path: Path, case: RootCase) -> None:
    for entry in case.entries:
        if entry.endswith("/"):
            (tmp_path / entry).mkdir()
        else:
            (tmp_path / entry).write_text("x")
    with pytest.raises(ArchiveError, match=case.message):
        find_submission_root(tmp_path)


class HostileTar(NamedTuple):
    label: str
    build: object  # callable(bundle)
    error: type
    message: str


def _absolute(bundle: tarfile.TarFile) -> None:
    add_tar_file(bundle, "/tmp/nips_adv_evil.txt")


def _dotdot(bundle: tarfile.TarFile) -> None:
    add_tar_file(bundle, "sub/../../evil.txt")


def _symlink_out(bundle: tarfile.TarFile) -> None:
    add_tar_special(bundle, "sub/escape", tarfile.SYMTYPE, linkname="../../..")


def _symlink_absolute(bundle: tarfile.TarFile) -> None:
    add_tar_special(bundle, "sub/passwd", tarfile.SYMTYPE, linkname="/etc/passwd")


def _write_through_link(bundle: tarfile.TarFile) -> None:
    # Each link alone stays inside; the second one reaches outside only through the first.
    add_tar_special(bundle, "a", tarfile.DIRTYPE)
    add_tar_special(bundle, "a/up", tarfile.SYMTYPE, linkname="..")
    add_tar_special(bundle, "a/up/out", tarfile.SYMTYPE, linkname="..")


def _chained_links(bundle: tarfile.TarFile) -> None:
    add_tar_special(bundle, "a", tarfile.DIRTYPE)
    # Checked while x is missing, a/later resolves inside; once x -> ".", x/.. is above the root.
    add_tar_special(bundle, "a/later", tarfile.SYMTYPE, linkname="../x/..")
    add_tar_special(bundle, "x", tarfile.SYMTYPE, linkname=".")


def _hardlink_out(bundle: tarfile.TarFile) -> None:
    add_tar_special(bundle, "sub/shadow", tarfile.LNKTYPE, linkname="/etc/passwd")


def _device(bundle: tarfile.TarFile) -> None:
    add_tar_special(bundle, "sub/null", tarfile.CHRTYPE)


def _fifo(bundle: tarfile.TarFile) -> None:
    add_tar_special(bundle, "sub/pipe", tarfile.FIFOTYPE)


def _too_big(bundle: tarfile.TarFile) -> None:
    add_tar_file(bundle, "sub/zeros.bin", bytes(2 * MiB))


@pytest.mark.parametrize(
    "case",
    [
        HostileTar("absolute", _absolute, UnsafeArchiveError, "'/tmp/nips_adv_evil.txt': absolute path"),
        HostileTar("dotdot", _dotdot, UnsafeArchiveError, r"'sub/\.\./\.\./evil.txt': '\.\.' in its path"),
        HostileTar("symlink", _symlink_out, UnsafeArchiveError, "'sub/escape': link to '../../..' points outside"),
        HostileTar("symlink-abs", _symlink_absolute, UnsafeArchiveError, "'sub/passwd': link to '/etc/passwd'"),
        HostileTar("through-link", _write_through_link, UnsafeArchiveError, "'a/up/out'"),
        HostileTar("chained", _chained_links, UnsafeArchiveError, "'a/later': link points outside the submission folder through"),
        HostileTar("hardlink", _hardlink_out, UnsafeArchiveError, "'sub/shadow': hard link"),
        HostileTar("device", _device, UnsafeArchiveError, "'sub/null': device file"),
        HostileTar("fifo", _fifo, UnsafeArchiveError, "'sub/pipe': FIFO"),
        HostileTar("bomb", _too_big, ArchiveError, "unpacks to more than 1 MiB"),
    ],
    ids=lambda case: case.label,
)
def test_hostile_tar_refused_and_nothing_left(tmp_path: Path, case: HostileTar) -> None:
    archive = tmp_path / "hostile.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        add_tar_file(bundle, "sub/metadata.json", b"{}")
        case.build(bundle)
    destination = tmp_path / "work" / "out"
    (tmp_path / "work").mkdir()
    with pytest.raises(case.error, match=case.message):
        extract_archive(archive, destination, max_unpacked_bytes=MiB)
    assert not destination.exists()
    assert sorted(tmp_path.iterdir()) == [tmp_path / "hostile.tar.gz", tmp_path / "work"]
    assert not Path("/tmp/nips_adv_evil.txt").exists()


def test_failure_in_existing_destination_keeps_its_content(tmp_path: Path) -> None:
    archive = tmp_path / "hostile.tar"
    with tarfile.open(archive, "w") as bundle:
        add_tar_file(bundle, "ok.txt")
        add_tar_special(bundle, "pipe", tarfile.FIFOTYPE)
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "mine.txt").write_text("keep")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, destination)
    assert [path.name for path in destination.iterdir()] == ["mine.txt"]


def test_existing_name_in_destination_is_not_overwritten(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as bundle:
        add_tar_file(bundle, "mine.txt", b"theirs")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="already exists"):
        extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "mine"


def _zip_bomb(path: Path, real_bytes: int, declared_bytes: int) -> None:
    """A zip whose one member declares ``declared_bytes`` but inflates to ``real_bytes`` zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("bomb.bin", bytes(real_bytes))
    data = path.read_bytes()
    real, fake = real_bytes.to_bytes(4, "little"), declared_bytes.to_bytes(4, "little")
    assert data.count(real) == 2  # local header and central directory
    path.write_bytes(data.replace(real, fake))


def test_zip_bomb_declared_small_is_stopped(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    _zip_bomb(archive, real_bytes=3 * MiB + 17, declared_bytes=100)
    assert archive.stat().st_size < 10_000
    with pytest.raises(ArchiveError, match="'bomb.bin' expands past its declared size of 100 bytes"):
        extract_archive(archive, tmp_path / "out", max_unpacked_bytes=MiB)
    assert not (tmp_path / "out").exists()


def test_zip_declaring_too_much_is_refused_before_extracting(tmp_path: Path) -> None:
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("zeros.bin", bytes(2 * MiB))
    with pytest.raises(ArchiveError, match="declares 2097152 bytes unpacked, over the limit of 1 MiB"):
        extract_archive(archive, tmp_path / "out", max_unpacked_bytes=MiB)


@pytest.mark.parametrize(
    "name, message",
    [
        ("/abs.txt", "absolute path"),
        ("a/../../b.txt", r"'\.\.' in its path"),
        ("..\\evil.txt", r"'\.\.' in its path"),
        ("C:/x", "absolute"),
    ],
)
def test_hostile_zip_names(tmp_path: Path, name: str, message: str) -> None:
    archive = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hostile_zip_link_and_fifo(tmp_path: Path) -> None:
    for label, kind, data, message in [
        ("link", stat.S_IFLNK, b"../../etc", "'evil': link to '../../etc' points outside"),
        ("fifo", stat.S_IFIFO, b"", "'evil': FIFO"),
    ]:
        archive = tmp_path / f"{label}.zip"
        with zipfile.ZipFile(archive, "w") as bundle:
            add_zip_file(bundle, "evil", data, mode=0o777, kind=kind)
        with pytest.raises(UnsafeArchiveError, match=message):
            extract_archive(archive, tmp_path / label)


def test_corrupt_zip_crc(tmp_path: Path) -> None:
    archive = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("data.txt", b"hello world, this is data")
    archive.write_bytes(archive.read_bytes().replace(b"hello world", b"HELLO WORLD"))
    with pytest.raises(ArchiveError, match="CRC"):
        extract_archive(archive, tmp_path / "out")


class BadArchive(NamedTuple):
    name: str
    content: bytes
    message: str


@pytest.mark.parametrize(
    "case",
    [
        BadArchive("sub.rar", b"Rar!", "unsupported archive type"),
        BadArchive("sub.zip", b"not a zip", "not a valid zip archive"),
        BadArchive("sub.tar", b"not a tar" * 100, "not a valid tar archive"),
        BadArchive("sub.tar.gz", b"\x1f\x8b\x08garbage", "sub.tar.gz"),
    ],
    ids=lambda case: case.name,
)
def test_bad_archives(tmp_path: Path, case: BadArchive) -> None:
    archive = tmp_path / case.name
    archive.write_bytes(case.content)
    with pytest.raises(ArchiveError, match=case.message):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_packed_size_limit(tmp_path: Path) -> None:
    archive = make_submission_tar(tmp_path / "s.tar")
    with pytest.raises(ArchiveError, match="over the limit of 1 KiB"):
        extract_archive(archive, tmp_path / "out", max_archive_bytes=1024)


def test_safe_member_path_root_and_parts() -> None:
    assert safe_member_path("./") is None
    assert str(safe_member_path("./a//b/./c.txt")) == "a/b/c.txt"


def test_extracted_archive_context_cleans_up(tmp_path: Path) -> None:
    archive = make_submission_tar(tmp_path / "s.tar.gz")
    with extracted_archive(archive) as folder:
        assert (folder / "sub" / "metadata.json").is_file()
    assert not folder.exists() and not folder.parent.exists()
