"""The contract's CSV files: ``target_class.csv``, the defense's ``result.csv`` and the dataset CSV."""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd

from .constants import NUM_LABELS, TARGET_CLASS_FILE

DATASET_COLUMNS = ("ImageId", "TrueLabel", "TargetClass")
"""Columns of the official dev/final dataset CSV that scoring needs."""

DOWNLOAD_COLUMNS = ("ImageId", "URL", "x1", "y1", "x2", "y2")
"""Columns the image downloader needs in addition."""


class ContractFileError(Exception):
    """A contract CSV that cannot be used at all; the message names the file."""


@dataclass
class LabelFile:
    """Parsed ``FILENAME,LABEL`` rows: good ones in ``labels``, rejected ones described in ``problems``."""

    labels: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


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


def parse_label(text: str) -> int | None:
    """The integer label 1..1000 in ``text``, or None when it is not one."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if 1 <= value <= NUM_LABELS else None


def read_label_file(path: Path) -> LabelFile:
    """Read ``FILENAME,LABEL`` lines (``target_class.csv`` or a defense's ``result.csv``).

    Rows that do not parse are described in ``problems`` (file and line number) and skipped,
    as the organisers ignore them. Raises ContractFileError when the file cannot be read.
    """
    path = Path(path)
    result = LabelFile()
    try:
        text = decode_text(path.read_bytes())
    except OSError as error:
        raise ContractFileError(f"{path}: cannot read ({error.strerror or error})") from None
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
        result.labels[name] = label
    return result


def read_target_classes(input_dir: Path) -> LabelFile:
    """Target labels from ``INPUT_DIR/target_class.csv``; raises ContractFileError when it is missing."""
    path = Path(input_dir) / TARGET_CLASS_FILE
    if not path.is_file():
        raise ContractFileError(f"{path}: missing (a targeted attack needs {TARGET_CLASS_FILE} in INPUT_DIR)")
    return read_label_file(path)


def write_label_rows(stream: TextIO, rows: list[tuple[str, int]]) -> None:
    """Append ``FILENAME,LABEL`` lines, no header, and flush so a killed run keeps them."""
    for name, label in rows:
        stream.write(f"{name},{int(label)}\n")
    stream.flush()


def write_label_file(path: Path, labels: dict[str, int]) -> None:
    """Write a whole ``FILENAME,LABEL`` file (e.g. ``target_class.csv``) in name order."""
    with open(path, "w", encoding="utf-8", newline="") as stream:
        write_label_rows(stream, sorted(labels.items()))


def read_dataset_csv(path: Path, required_columns: tuple[str, ...] = DATASET_COLUMNS) -> pd.DataFrame:
    """Read an official dataset CSV (``ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,...``).

    ``ImageId`` is kept as a string (ids such as ``0c7ac4a8c9dfa802`` or ``00001`` must not turn
    into numbers). Raises ContractFileError naming the file and any missing column.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(io.StringIO(decode_text(path.read_bytes())), dtype={"ImageId": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ContractFileError(f"{path}: cannot read dataset CSV ({error})") from None
    missing = [column for column in required_columns if column not in frame.columns]
    if missing:
        raise ContractFileError(f"{path}: dataset CSV lacks column(s) {', '.join(missing)}")
    return frame
