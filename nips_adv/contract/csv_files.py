"""The contract's CSV files: ``target_class.csv``, the defense's ``result.csv`` and the dataset CSV."""

from __future__ import annotations

import codecs
import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from .atomic import atomic_write
from .constants import NUM_LABELS, TARGET_CLASS_FILE

DATASET_COLUMNS = ("ImageId", "TrueLabel", "TargetClass")
"""Columns of the official dev/final dataset CSV that scoring needs."""

BOX_COLUMNS = ("x1", "y1", "x2", "y2")
"""The relative crop box of each image in the dataset CSV."""

DOWNLOAD_COLUMNS = ("ImageId", "URL", *BOX_COLUMNS)
"""Columns the image downloader needs in addition."""


class ContractFileError(Exception):
    """A contract CSV that cannot be used at all; the message names the file."""


@dataclass
class LabelFile:
    """Parsed ``FILENAME,LABEL`` rows: good ones in ``labels``, rejected ones described in ``problems``."""

    labels: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    """Names given two different labels: which lines, and that the last row's label is used."""


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> str:
    """Text of a CSV as editors save it: UTF-8 with or without a byte-order mark, UTF-16/32 with one
    (Windows "Unicode"), UTF-16 without one (every other byte NUL), else UTF-8 with bad bytes replaced.
    """
    for bom, encoding in _BOMS:  # UTF-32 LE first: its mark starts like UTF-16 LE's.
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    sample = data[:200]
    if len(sample) >= 4 and sample[1::2].count(0) > len(sample) // 4 and sample[0::2].count(0) == 0:
        return data.decode("utf-16-le", errors="replace")
    if len(sample) >= 4 and sample[0::2].count(0) > len(sample) // 4 and sample[1::2].count(0) == 0:
        return data.decode("utf-16-be", errors="replace")
    return data.decode("utf-8", errors="replace")


def parse_label(value: object) -> int | None:
    """The label 1..1000 in ``value`` (CSV text, or a number as pandas reads it), or None when it is not one.

    A whole float counts (pandas reads an integer column with a gap as floats: 306.0); text must
    be an integer, as the organisers' ``int(text)`` required.
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or not float(value).is_integer():
            return None
        number = int(value)
    elif isinstance(value, (int, np.integer)):
        number = int(value)
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            return None
    return number if 1 <= number <= NUM_LABELS else None


def read_label_file(path: Path) -> LabelFile:
    """Read ``FILENAME,LABEL`` lines (``target_class.csv`` or a defense's ``result.csv``).

    Rows that do not parse are described in ``problems`` (file and line number) and skipped,
    as the organisers ignore them. Raises ContractFileError when the file cannot be read.
    """
    path = Path(path)
    result = LabelFile()
    if path.is_dir():
        raise ContractFileError(f"{path}: is a folder, not a FILENAME,LABEL file")
    try:
        text = decode_text(path.read_bytes())
    except OSError as error:
        raise ContractFileError(f"{path}: cannot read ({error.strerror or error})") from None
    first_line: dict[str, int] = {}
    for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 2:
            result.problems.append(f"{path}:{line_number}: expected FILENAME,LABEL, got {','.join(row)!r}")
            continue
        name, label = row[0].strip(), parse_label(row[1])
        if not name or label is None:
            result.problems.append(f"{path}:{line_number}: label {row[1].strip()!r} is not an integer 1..{NUM_LABELS}")
            continue
        if name in result.labels and result.labels[name] != label:
            # The organisers' reader builds a dict, so the last row wins; say so rather than pick silently.
            result.conflicts.append(
                f"{path}:{line_number}: {name} has label {label} here and {result.labels[name]} on line {first_line[name]}; "
                f"{label}, the last row's, is used"
            )
        first_line.setdefault(name, line_number)
        result.labels[name] = label
    return result


def read_target_classes(input_dir: Path) -> LabelFile:
    """Target labels from ``INPUT_DIR/target_class.csv``; raises ContractFileError when it is missing."""
    path = Path(input_dir) / TARGET_CLASS_FILE
    if not path.exists():
        raise ContractFileError(f"{path}: missing (a targeted attack needs {TARGET_CLASS_FILE} in INPUT_DIR)")
    return read_label_file(path)


def write_label_rows(stream: IO[str], rows: list[tuple[str, int]]) -> None:
    """Append ``FILENAME,LABEL`` lines, no header, and flush so a killed run keeps them."""
    for name, label in rows:
        stream.write(f"{name},{int(label)}\n")
    stream.flush()


def write_label_file(path: Path, labels: dict[str, int]) -> None:
    """Write a whole ``FILENAME,LABEL`` file (e.g. ``target_class.csv``) in name order."""
    with atomic_write(Path(path), "w", durable=False, encoding="utf-8", newline="") as stream:
        write_label_rows(stream, sorted(labels.items()))


def read_dataset_csv(path: Path | str, required_columns: tuple[str, ...] = DATASET_COLUMNS, *, data: bytes | None = None) -> pd.DataFrame:
    """Read an official dataset CSV (``ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,...``).

    ``ImageId`` is kept as a string (ids such as ``0c7ac4a8c9dfa802`` or ``00001`` must not turn
    into numbers). ``data``: the CSV's bytes, already fetched (``path`` then only names it, e.g. a URL).
    Raises ContractFileError naming the file and any missing column.
    """
    try:
        text = decode_text(data if data is not None else Path(path).read_bytes())
        frame = pd.read_csv(io.StringIO(text), dtype={"ImageId": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ContractFileError(f"{path}: cannot read dataset CSV ({error})") from None
    missing = [column for column in required_columns if column not in frame.columns]
    if missing:
        raise ContractFileError(f"{path}: dataset CSV lacks column(s) {', '.join(missing)}")
    return frame


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DatasetRow:
    """One row of an official dataset CSV, typed; ``line`` is its line number (the header is line 1).

    A label is None when its column is absent or the cell is not an integer 1..1000; ``box`` is the
    relative (x1, y1, x2, y2) crop, None when a coordinate is not a number (a missing one is NaN).
    """

    line: int
    image_id: str
    true_label: int | None
    target_class: int | None
    url: str
    box: Box | None


@dataclass(frozen=True)
class DatasetTable:
    """A dataset CSV read once: its path (or URL), its columns and every row in file order."""

    path: str
    columns: tuple[str, ...]
    rows: list[DatasetRow]


def read_dataset(path: Path | str, required_columns: tuple[str, ...] = DATASET_COLUMNS, *, data: bytes | None = None) -> DatasetTable:
    """The one dataset-CSV reader of the toolkit: every row typed (see DatasetRow).

    ``data`` as for read_dataset_csv. Raises ContractFileError naming the file when it cannot be
    read or lacks a required column.
    """
    frame = read_dataset_csv(path, required_columns, data=data)
    columns = tuple(str(column) for column in frame.columns)
    rows = [
        DatasetRow(
            line=line,
            image_id=_cell_text(values.get("ImageId")),
            true_label=parse_label(values["TrueLabel"]) if "TrueLabel" in values else None,
            target_class=parse_label(values["TargetClass"]) if "TargetClass" in values else None,
            url=_cell_text(values.get("URL")),
            box=_box(values) if all(column in values for column in BOX_COLUMNS) else None,
        )
        for line, values in enumerate(frame.to_dict(orient="records"), start=2)
    ]
    return DatasetTable(str(path), columns, rows)



def _cell_text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def _box(values: dict) -> Box | None:
    try:
        x1, y1, x2, y2 = (float(values[column]) for column in BOX_COLUMNS)
    except (TypeError, ValueError):
        return None
    return (x1, y1, x2, y2)


def labelled_rows(table: DatasetTable, *, need_target: bool) -> tuple[list[DatasetRow], list[str]]:
    """The rows usable for scoring, and one problem line per row skipped.

    A row is skipped when its TrueLabel (or, with ``need_target``, its TargetClass) is not an
    integer 1..1000, or when its ImageId was seen before (the first row is used).
    """
    rows: list[DatasetRow] = []
    problems: list[str] = []
    seen: set[str] = set()
    for row in table.rows:
        if row.true_label is None or (need_target and row.target_class is None):
            problems.append(
                f"{table.path}:{row.line}: ImageId {row.image_id}: TrueLabel/TargetClass are not both integers 1..{NUM_LABELS}; row skipped"
            )
            continue
        if row.image_id in seen:
            problems.append(f"{table.path}:{row.line}: ImageId {row.image_id} appears twice; the first row is used")
            continue
        seen.add(row.image_id)
        rows.append(row)
    return rows, problems


@dataclass(frozen=True)
class DatasetLabels:
    """TrueLabel and TargetClass by ImageId, from an official dataset CSV."""

    true_labels: dict[str, int]
    target_classes: dict[str, int]
    problems: list[str]


def read_dataset_labels(dataset_csv: Path) -> DatasetLabels:
    """The labels of each dataset row; rows whose labels are not integers 1..1000 are named in ``problems``.

    Raises ContractFileError when the CSV cannot be read or lacks a needed column.
    """
    rows, problems = labelled_rows(read_dataset(dataset_csv), need_target=True)
    return DatasetLabels(
        {row.image_id: row.true_label for row in rows if row.true_label is not None},
        {row.image_id: row.target_class for row in rows if row.target_class is not None},
        problems,
    )
