"""The one image loader and writer: PNG files in a folder, uint8 RGB arrays in memory."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write
from .constants import IMAGE_SIZE

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Largest image (width x height) any tool decodes: 16.7 megapixels, 50 MB as RGB.

Competition images are 299x299 and photos are rarely above 12 megapixels; a PNG declaring more
is refused from its header, before any pixel is decoded, so a 100 KB file cannot claim
gigabytes. ``--max-pixels`` (the three tools) or ``NIPS_ADV_MAX_PIXELS`` changes it."""
MAX_PIXELS_VARIABLE = "NIPS_ADV_MAX_PIXELS"

# The guard below checks every image's declared size before decoding, against our own limit;
# Pillow's warning for sizes between its limit and twice it would only repeat that, on stderr.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_max_pixels_override: int | None = None


class ImageReadError(Exception):
    """An input image that cannot be decoded; the message names the file."""


class ImageTooLargeError(ImageReadError):
    """An image whose header declares more pixels than the limit; nothing of it was decoded."""


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit of this process (None: back to ``NIPS_ADV_MAX_PIXELS`` or the default)."""
    global _max_pixels_override
    if limit is not None and limit < 1:
        raise ValueError(f"the pixel limit must be at least 1, got {limit}")
    _max_pixels_override = limit


def max_pixels() -> int:
    """The pixel limit in force: ``set_max_pixels``, else ``$NIPS_ADV_MAX_PIXELS``, else DEFAULT_MAX_PIXELS."""
    if _max_pixels_override is not None:
        return _max_pixels_override
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value >= 1:
            return value
    return DEFAULT_MAX_PIXELS


def open_image_guarded(source, name: object, limit: int | None = None) -> Image.Image:
    """Open ``source`` (a path or binary stream) lazily and check its declared size; nothing decoded yet.

    The header alone gives the size, so a bomb is refused before any allocation. Raises
    ImageTooLargeError (over ``limit``, default ``max_pixels()``) or ImageReadError naming
    ``name``. The caller closes the image (``with``) after ``load()``.
    """
    limit = max_pixels() if limit is None else limit
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{name}: image too large ({error}); skipped without decoding") from None
    width, height = image.size
    if width * height > limit:
        image.close()
        raise ImageTooLargeError(
            f"{name}: image of {width}x{height} pixels is over the limit of {limit} pixels "
            f"(--max-pixels / {MAX_PIXELS_VARIABLE}); not decoded"
        )
    return image


def image_file_name(image_id: str) -> str:
    """The file of dataset image ``image_id``: ``IMAGEID.png``."""
    return f"{image_id}.png"


def image_id_of(file_name: str, suffixes: tuple[str, ...] = (".png",), *, any_case: bool = True) -> str:
    """The ImageId of ``file_name``: the name without the first of ``suffixes`` it ends with.

    ``any_case=False`` matches suffixes exactly, as the organisers read a defense's result.csv.
    """
    compared = file_name.lower() if any_case else file_name
    for suffix in suffixes:
        if compared.endswith(suffix.lower() if any_case else suffix):
            return file_name[: -len(suffix)]
    return file_name


def list_png_files(input_dir: Path) -> list[Path]:
    """Every regular ``*.png`` file directly in ``input_dir`` (not recursive), sorted by name.

    Other files and sub-folders are ignored, as the organisers' tools do. The suffix check is
    case-insensitive because entrants' datasets mix ``.png`` and ``.PNG``. A ``.png`` link to
    nothing is listed too, so that reading it names it instead of skipping it in silence.
    """
    input_dir = Path(input_dir)
    return sorted(
        (
            entry
            for entry in input_dir.iterdir()
            if entry.suffix.lower() == ".png" and (entry.is_file() or (entry.is_symlink() and not entry.exists()))
        ),
        key=lambda path: path.name,
    )


def read_png(path: Path) -> np.ndarray:
    """Decode ``path`` to a ``(height, width, 3)`` uint8 RGB array; any PNG mode is converted.

    Raises ImageReadError naming the file when it is empty, truncated or not an image, and
    ImageTooLargeError when its header declares more than ``max_pixels()`` pixels (checked
    before decoding, so memory stays bounded whatever the file claims).
    """
    path = Path(path)
    try:
        with open_image_guarded(path, path) as image:
            image.load()
            return _to_rgb_array(image)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        if path.is_symlink() and not path.exists():
            reason = "dangling symbolic link"
        elif path.exists() and path.stat().st_size == 0:
            reason = "empty file"
        else:
            reason = str(error) or type(error).__name__
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


def write_png(pixels: np.ndarray, path: Path, *, durable: bool = False) -> None:
    """Write a ``(height, width, 3)`` uint8 array as an RGB PNG, atomically (``nips_adv.contract.atomic``).

    The file appears under its final name only once complete, so a run killed at the time
    limit never leaves a half-written image; ``durable`` also fsyncs it (downloads).
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected (height, width, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}")
    with atomic_write(Path(path), "wb", durable=durable) as stream:
        Image.fromarray(pixels, mode="RGB").save(stream, format="PNG")


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

    Memory is bounded by pixels, not only by images: a group is also yielded once it holds
    ``max(max_pixels(), batch_size x 299 x 299)`` pixels, and the largest waiting group is
    yielded early when all of them together hold twice that (many large images of distinct
    sizes would otherwise all wait until the end).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    batch_pixels = max(max_pixels(), batch_size * IMAGE_SIZE * IMAGE_SIZE)
    pending: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = {}
    pending_pixels = 0
    for path in paths:
        try:
            pixels = read_png(path)
        except ImageReadError as error:
            on_error(error)
            continue
        shape = pixels.shape[:2]
        group = pending.setdefault(shape, [])
        group.append((path, pixels))
        pending_pixels += shape[0] * shape[1]
        if len(group) == batch_size or len(group) * shape[0] * shape[1] >= batch_pixels:
            pending_pixels -= len(group) * shape[0] * shape[1]
            yield _make_batch(pending.pop(shape))
        elif pending_pixels > 2 * batch_pixels:
            largest = max(pending, key=lambda size: len(pending[size]) * size[0] * size[1])
            pending_pixels -= len(pending[largest]) * largest[0] * largest[1]
            yield _make_batch(pending.pop(largest))
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
    resized = Image.fromarray(pixels, mode="RGB").resize((width, height), resample=Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8).copy()
