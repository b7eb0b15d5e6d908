"""The one image loader and writer: PNG files in a folder, uint8 RGB arrays in memory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageReadError(Exception):
    """An input image that cannot be decoded; the message names the file."""


def list_png_files(input_dir: Path) -> list[Path]:
    """Every regular ``*.png`` file directly in ``input_dir`` (not recursive), sorted by name.

    Other files and sub-folders are ignored, as the organisers' tools do. The suffix check is
    case-insensitive because entrants' datasets mix ``.png`` and ``.PNG``.
    """
    input_dir = Path(input_dir)
    return sorted(
        (entry for entry in input_dir.iterdir() if entry.suffix.lower() == ".png" and entry.is_file()),
        key=lambda path: path.name,
    )


def read_png(path: Path) -> np.ndarray:
    """Decode ``path`` to a ``(height, width, 3)`` uint8 RGB array; any PNG mode is converted.

    Raises ImageReadError naming the file when it is empty, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb_array(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "empty file" if path.exists() and path.stat().st_size == 0 else str(error) or type(error).__name__
        raise ImageReadError(f"{path}: cannot read image ({reason})") from None


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image of any mode as a ``(height, width, 3)`` uint8 RGB array, as ``read_png`` converts."""
    return _to_rgb_array(image)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of letting PIL clip.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(values * 255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    # Alpha is dropped (not composited), as the organisers' loader does with PIL's RGB conversion.
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def write_png(pixels: np.ndarray, path: Path) -> None:
    """Write a ``(height, width, 3)`` uint8 array as an RGB PNG, atomically.

    The file appears under its final name only once complete, so a run killed at the time
    limit never leaves a half-written image.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected (height, width, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}")
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(pixels, mode="RGB").save(stream, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ImageBatch:
    """Images of one size read together: ``pixels`` is ``(batch, height, width, 3)`` uint8."""

    paths: tuple[Path, ...]
    pixels: np.ndarray

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(path.name for path in self.paths)


def iter_image_batches(
    paths: Iterable[Path],
    batch_size: int,
    on_error: Callable[[ImageReadError], None],
) -> Iterator[ImageBatch]:
    """Read ``paths`` in order and yield batches of equal-sized images, at most ``batch_size`` each.

    Unreadable files go to ``on_error`` and are skipped. Images of an unusual size wait in
    their own group; every group is flushed at the end, so each readable image is yielded once.
    No padding: a short last batch stays short.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    pending: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = {}
    for path in paths:
        try:
            pixels = read_png(path)
        except ImageReadError as error:
            on_error(error)
            continue
        group = pending.setdefault(pixels.shape[:2], [])
        group.append((path, pixels))
        if len(group) == batch_size:
            yield _make_batch(pending.pop(pixels.shape[:2]))
    for group in pending.values():
        yield _make_batch(group)


def _make_batch(group: list[tuple[Path, np.ndarray]]) -> ImageBatch:
    return ImageBatch(paths=tuple(path for path, _ in group), pixels=np.stack([pixels for _, pixels in group]))


def resize_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(h, w, 3)`` uint8 pixels to ``size`` = ``(height, width)`` with PIL's bicubic filter.

    The organisers resize a wrongly sized attack output back to the clean image's size this way
    before clipping it to the epsilon box. Pixels already of that size are returned unchanged.
    """
    height, width = size
    if pixels.shape[:2] == (height, width):
        return pixels
    resized = Image.fromarray(pixels, mode="RGB").resize((width, height), resample=Image.BICUBIC)
    return np.asarray(resized, dtype=np.uint8).copy()
