"""The competition dataset: its CSV, then every image cropped to its box and resized to 299x299.

Cropping and resizing follow the organisers' ``download_images.py``, so the files match the
ones every entrant used: convert to RGB, crop to ``(int(x1 * w), int(y1 * h), int(x2 * w),
int(y2 * h))``, resize to 299x299 with Lanczos (Pillow's former ``ANTIALIAS``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..contract.atomic import write_bytes_atomically
from ..contract.constants import IMAGE_SIZE
from ..contract.csv_files import DOWNLOAD_COLUMNS, Box, ContractFileError, DatasetRow, DatasetTable, read_dataset
from ..contract.images import ImageReadError, image_file_name, open_image_guarded, to_rgb_array, write_png
from .http import FetchError, RetryPolicy, check_url, fetch_bytes, join_url

OFFICIAL_DATASETS = {"dev": "dev_dataset.csv", "final": "final_dataset.csv"}
DEFAULT_DATASET_BASE_URL = (
    "https://raw.githubusercontent.com/cleverhans-lab/cleverhans/master/"
    "cleverhans_v3.1.0/examples/nips17_adversarial_competition/dataset/"
)
DATASET_BASE_URL_VARIABLE = "NIPS_ADV_DATASET_BASE_URL"
"""Folder URL holding dev_dataset.csv and final_dataset.csv (a mirror of the organisers' folder)."""
IMAGE_MIRROR_VARIABLE = "NIPS_ADV_IMAGE_MIRROR"
"""Folder URL with the images laid out as HOST/PATH (``wget --mirror``); unset: the CSV's URLs."""

FAILED_FILE = "failed.csv"
FAILED_COLUMNS = ("ImageId", "URL", "Reason")
MAX_IMAGE_BYTES = 64 * 1024**2
MAX_CSV_BYTES = 64 * 1024**2
DEFAULT_JOBS = 8
IMAGE_DEADLINE_S = 180.0
"""Total seconds for one image (every attempt included) unless ``--deadline`` says otherwise."""

# An ImageId becomes a file name: no separators, no leading dot, nothing that climbs out of the folder.
_IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class DatasetError(Exception):
    """The dataset cannot be downloaded at all (CSV unreachable or unusable); the message is one line."""


@dataclass(frozen=True)
class ImageRequest:
    """One row of the dataset CSV: ``box`` is the relative (x1, y1, x2, y2), 0 <= x1 < x2 <= 1."""

    image_id: str
    url: str
    box: Box

    @property
    def file_name(self) -> str:
        return image_file_name(self.image_id)


@dataclass(frozen=True)
class ImageFailure:
    image_id: str
    url: str
    reason: str


@dataclass
class DatasetSummary:
    """What a run did: ``present`` images were already there, ``downloaded`` were written now."""

    output_dir: Path
    csv_path: Path
    total: int = 0
    present: int = 0
    downloaded: int = 0
    failures: list[ImageFailure] = field(default_factory=list)
    failed_csv: Path | None = None

    def describe(self) -> str:
        text = (
            f"{self.total} images in {self.csv_path.name}: {self.downloaded} downloaded, "
            f"{self.present} already present, {len(self.failures)} failed"
        )
        if self.failed_csv is not None:
            text += f" (listed in {self.failed_csv})"
        return text


@dataclass(frozen=True)
class CsvSource:
    """Where the dataset CSV comes from (``location`` is a URL when ``is_url``) and its name beside the images."""

    location: str
    is_url: bool
    file_name: str


def resolve_csv_source(source: str, *, csv_url: str | None = None, base_url: str | None = None) -> CsvSource:
    """``dev``/``final`` (from ``base_url``, ``$NIPS_ADV_DATASET_BASE_URL`` or the organisers'
    repository; ``csv_url`` overrides), an http(s) URL, or a local CSV path."""
    if source in OFFICIAL_DATASETS:
        file_name = OFFICIAL_DATASETS[source]
        if csv_url is None:
            base = base_url or os.environ.get(DATASET_BASE_URL_VARIABLE) or DEFAULT_DATASET_BASE_URL
            csv_url = join_url(base, file_name)
        return CsvSource(location=csv_url, is_url=True, file_name=file_name)
    if csv_url is not None:
        raise DatasetError("--csv-url only applies to the official datasets (dev, final)")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source):
        check_url_or_fail(source)
        name = Path(urlsplit(source).path).name
        return CsvSource(location=source, is_url=True, file_name=name if name.endswith(".csv") else "dataset.csv")
    path = Path(source).expanduser()
    if not path.is_file():
        raise DatasetError(f"{source}: no such CSV file (expected dev, final, a CSV path or an http(s) URL)")
    return CsvSource(location=str(path), is_url=False, file_name=path.name)


def check_url_or_fail(url: str) -> None:
    try:
        check_url(url)
    except FetchError as error:
        raise DatasetError(str(error)) from None


def mirrored_url(url: str, image_mirror: str | None) -> str:
    """``url`` rewritten to ``IMAGE_MIRROR/HOST/PATH`` when a mirror is given (query dropped)."""
    if not image_mirror:
        return url
    parts = urlsplit(url)
    return join_url(image_mirror, f"{parts.netloc}{parts.path}".lstrip("/"))


def parse_requests(table: DatasetTable) -> tuple[list[ImageRequest], list[ImageFailure]]:
    """Rows of a dataset CSV (read with DOWNLOAD_COLUMNS) -> usable requests and rows rejected with a reason."""
    requests: list[ImageRequest] = []
    failures: list[ImageFailure] = []
    seen: set[str] = set()
    for row in table.rows:
        reason = _row_problem(row, seen)
        if reason is not None or row.box is None:
            failures.append(ImageFailure(image_id=row.image_id, url=row.url, reason=reason or "no box"))
            continue
        seen.add(row.image_id)
        requests.append(ImageRequest(image_id=row.image_id, url=row.url, box=row.box))
    return requests, failures


def _row_problem(row: DatasetRow, seen: set[str]) -> str | None:
    if not _IMAGE_ID.fullmatch(row.image_id) or ".." in row.image_id:
        return f"ImageId {row.image_id!r} is not usable as a file name"
    if row.image_id in seen:
        return f"duplicate ImageId {row.image_id}"
    if not row.url:
        return "no URL"
    if row.box is None:
        return "box (x1, y1, x2, y2) is not numeric"
    x1, y1, x2, y2 = row.box
    if not all(math.isfinite(value) for value in row.box):
        return f"box ({x1}, {y1}, {x2}, {y2}) has a missing value"
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        return f"box ({x1}, {y1}, {x2}, {y2}) needs 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1"
    return None


def crop_and_resize(image: Image.Image, box: Box, size: int = IMAGE_SIZE) -> np.ndarray:
    """Crop ``image`` (any mode) to the relative ``box`` and resize: ``(size, size, 3)`` uint8 RGB.

    Raises ValueError when the box covers no whole pixel of this image.
    """
    rgb = Image.fromarray(to_rgb_array(image), mode="RGB")
    width, height = rgb.size
    x1, y1, x2, y2 = box
    pixels = (int(x1 * width), int(y1 * height), int(x2 * width), int(y2 * height))
    if pixels[2] <= pixels[0] or pixels[3] <= pixels[1]:
        raise ValueError(f"box {box} is empty on a {width}x{height} image")
    cropped = rgb.crop(pixels).resize((size, size), resample=Image.Resampling.LANCZOS)
    return np.asarray(cropped, dtype=np.uint8).copy()


def decode_image(data: bytes, *, content_type: str = "") -> Image.Image:
    """Decode a downloaded image fully; ValueError with a one-line reason when it is not one.

    The size its header declares is checked first, by the image reader's guard (``max_pixels``),
    so eight workers fed bombs hold at most eight images of the limit's size.
    """
    if content_type.lower().startswith("text/"):
        raise ValueError(f"server sent {content_type.split(';')[0]}, not an image")
    try:
        image = open_image_guarded(io.BytesIO(data), "image")
        image.load()
    except ImageReadError as error:
        raise ValueError(str(error).removeprefix("image: ")) from None
    except UnidentifiedImageError:
        kind = f" ({content_type.split(';')[0]})" if content_type else ""
        raise ValueError(f"not a readable image{kind}: unknown format") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise ValueError(f"corrupt image: {error or type(error).__name__}") from None
    return image


def fetch_image(request: ImageRequest, *, policy: RetryPolicy, image_mirror: str | None = None) -> np.ndarray:
    """Download, decode, crop and resize one image: ``(299, 299, 3)`` uint8.

    Raises FetchError (network) or ValueError (content) with a one-line reason.
    """
    response = fetch_bytes(
        mirrored_url(request.url, image_mirror), policy=policy, max_bytes=MAX_IMAGE_BYTES, deadline_s=IMAGE_DEADLINE_S
    )
    if "photo_unavailable" in response.final_url:
        # Flickr answers a deleted photo with a redirect to a placeholder image, status 200.
        raise ValueError(f"photo no longer available (redirected to {response.final_url})")
    return crop_and_resize(decode_image(response.data, content_type=response.content_type), request.box)


def _load_csv(source: CsvSource, *, policy: RetryPolicy) -> tuple[bytes, DatasetTable]:
    """The CSV's bytes and parsed rows; DatasetError when it cannot be fetched or lacks columns."""
    if source.is_url:
        try:
            data = fetch_bytes(source.location, policy=policy, max_bytes=MAX_CSV_BYTES).data
        except FetchError as error:
            raise DatasetError(f"cannot fetch the dataset CSV: {error}") from None
    else:
        data = Path(source.location).read_bytes()
    try:
        table = read_dataset(source.location, required_columns=DOWNLOAD_COLUMNS, data=data)
    except ContractFileError as error:
        raise DatasetError(str(error)) from None
    return data, table


def write_failures(path: Path, failures: list[ImageFailure]) -> None:
    """``failed.csv``: ``ImageId,URL,Reason`` with a header, one row per image not downloaded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FAILED_COLUMNS)
    writer.writerows((failure.image_id, failure.url, failure.reason) for failure in failures)
    write_bytes_atomically(path, buffer.getvalue().encode("utf-8"))


def _remove_stale_temporaries(output_dir: Path, image_ids: set[str]) -> None:
    """Temporary files of our images left by a killed run (write_png names them ``.ID.png.XXXX.tmp``)."""
    for path in output_dir.glob(".*.png.*.tmp"):
        if path.name[1:].split(".png.", 1)[0] in image_ids:
            path.unlink(missing_ok=True)


def download_dataset(
    source: str,
    output_dir: Path,
    *,
    csv_url: str | None = None,
    base_url: str | None = None,
    image_mirror: str | None = None,
    jobs: int = DEFAULT_JOBS,
    policy: RetryPolicy = RetryPolicy(),
    progress: bool = True,
) -> DatasetSummary:
    """Fetch the dataset CSV named by ``source`` and every image it lists into ``output_dir``.

    Writes ``ID.png`` (299x299 RGB) per image and the CSV itself; images already present are
    skipped, so a second run only fetches what is missing. Images that cannot be had are
    listed in ``output_dir/failed.csv`` (removed when nothing failed). Raises DatasetError
    before writing anything when the CSV cannot be fetched or lacks a column.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    image_mirror = image_mirror or os.environ.get(IMAGE_MIRROR_VARIABLE) or None
    csv_source = resolve_csv_source(source, csv_url=csv_url, base_url=base_url)
    data, table = _load_csv(csv_source, policy=policy)
    requests, failures = parse_requests(table)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / csv_source.file_name
    if csv_source.is_url or not (csv_path.exists() and csv_path.samefile(csv_source.location)):
        write_bytes_atomically(csv_path, data)
    _remove_stale_temporaries(output_dir, {request.image_id for request in requests})

    summary = DatasetSummary(output_dir=output_dir, csv_path=csv_path, total=len(requests) + len(failures))
    todo = [request for request in requests if not (output_dir / request.file_name).is_file()]
    summary.present = len(requests) - len(todo)

    def work(request: ImageRequest) -> ImageFailure | None:
        try:
            write_png(fetch_image(request, policy=policy, image_mirror=image_mirror), output_dir / request.file_name, durable=True)
        except (FetchError, ValueError) as error:
            # The URL has its own column in failed.csv.
            reason = str(error).removeprefix(f"{request.url}: ")
            return ImageFailure(image_id=request.image_id, url=request.url, reason=reason)
        except OSError as error:
            return ImageFailure(image_id=request.image_id, url=request.url, reason=f"cannot write: {error}")
        return None

    from tqdm import tqdm

    with tqdm(total=len(todo), unit="img", desc="images", disable=not progress, file=sys.stderr) as bar, ThreadPoolExecutor(
        max_workers=jobs
    ) as pool:
        futures = [pool.submit(work, request) for request in todo]
        try:
            for future in as_completed(futures):
                failure = future.result()
                if failure is None:
                    summary.downloaded += 1
                else:
                    failures.append(failure)
                    bar.set_postfix(failed=len(failures), refresh=False)
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    # failed.csv in the CSV's row order, whatever order the threads finished in.
    order = {row.image_id: index for index, row in enumerate(table.rows)}
    summary.failures = sorted(failures, key=lambda failure: order.get(failure.image_id, -1))
    failed_csv = output_dir / FAILED_FILE
    if summary.failures:
        write_failures(failed_csv, summary.failures)
        summary.failed_csv = failed_csv
    else:
        failed_csv.unlink(missing_ok=True)
    return summary
