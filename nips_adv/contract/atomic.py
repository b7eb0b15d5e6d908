"""The one atomic writer: a file appears under its final name only once complete.

Every tool that writes a file someone else may read while we run (attack PNGs, the defense's
CSV, downloads, archives, evaluation records) goes through ``atomic_write``: the data goes to a
hidden temporary file in the same folder (same file system, so the rename is atomic), which is
then renamed over the destination with ``os.replace``. The temporary file is created with mode
0666 filtered by the umask, exactly as ``open(path, "w")`` would create the destination, so
files written here are as readable as ordinary ones (``mkstemp``'s 0600 broke the Docker flow,
where another uid reads our outputs). A symlink at the destination is replaced, not followed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_NEW_FILE_MODE = 0o666
"""What ``open()`` asks for; the kernel removes the umask's bits."""


def temporary_name(path: Path) -> Path:
    """A hidden, unused-looking name beside ``path`` (``.NAME.RANDOM.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside ``path``, mode 0666 less the umask: (descriptor, path)."""
    while True:
        temporary = temporary_name(path)
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), _NEW_FILE_MODE), temporary
        except FileExistsError:
            continue


@contextmanager
def atomic_write(path: Path, mode: str = "wb", *, durable: bool = True, **open_arguments: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success rename it to ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (``open_arguments`` such as ``encoding``/``newline`` go to
    ``open``). ``durable`` fsyncs the data before the rename, so a power cut leaves either the
    old file or the new one, never an empty one; a killed process loses nothing without it (the
    page cache survives), so writers that only fear the time-limit kill pass ``durable=False``.
    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, mode, **open_arguments) as stream:
            yield stream
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path, *, durable: bool = True) -> Iterator[Path]:
    """``atomic_write`` for writers that need a file name (zipfile, tarfile): yields the temporary path.

    The temporary file exists (empty, umask mode) when the block starts and is written by name;
    on success it is fsynced (``durable``) and renamed to ``path``, on failure removed.
    """
    path = Path(path)
    handle, temporary = _create_temporary(path)
    os.close(handle)
    try:
        yield temporary
        if durable:
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through ``atomic_write``."""
    with atomic_write(path, "wb", durable=durable) as stream:
        stream.write(data)


def write_text_atomically(path: Path, text: str, *, durable: bool = True, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` through ``atomic_write`` (no newline translation)."""
    with atomic_write(path, "w", durable=durable, encoding=encoding, newline="") as stream:
        stream.write(text)
