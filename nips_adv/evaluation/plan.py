"""Find submissions and dataset images, and cut the evaluation into work pieces.

A work piece is one submission on one batch of at most BATCH_IMAGES images. Attack batches
take the dataset images sorted by name, as the final round did (eval_lib/image_batches.py);
batch k gets its own epsilon (``cycle``: the final round's COMPETITION_EPSILONS[k % 4]). Everything here is plain data, so pieces pickle for Ray.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..archives import ARCHIVE_SUFFIXES, ArchiveError, extract_archive, find_submission_root
from ..contract.constants import BATCH_IMAGES, COMPETITION_EPSILONS, NUM_LABELS
from ..contract.csv_files import read_dataset_csv
from ..contract.images import list_png_files
from ..submission.metadata import SubmissionError, SubmissionMetadata, read_metadata

ATTACK_TRACKS = ("attack", "targeted_attack")
CLEAN_TRACK = "clean"
"""Pseudo-track of the clean images that defenses also classify (reported, never scored)."""

EPSILON_CYCLE = "cycle"


@dataclass(frozen=True)
class Submission:
    """One usable submission: ``kind`` is ``attack``, ``targeted_attack`` or ``defense``."""

    name: str
    kind: str
    directory: str
    metadata: SubmissionMetadata


@dataclass(frozen=True)
class DatasetImage:
    """A dataset image present both in the images folder and in the dataset CSV; labels 1..1000."""

    image_id: str
    path: str
    true_label: int
    target_class: int | None


@dataclass
class Problems:
    """Bad input found along the way, one line each, naming the file or submission."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Worth saying but not wrong (e.g. a dataset CSV covering more images than the folder)."""

    def add(self, line: str) -> None:
        self.lines.append(line)

    def warn(self, line: str) -> None:
        self.warnings.append(line)


def epsilon_for_batch(epsilon: int | str, batch_index: int) -> int:
    """MAX_EPSILON of dataset batch ``batch_index``: ``epsilon`` itself, or the final round's cycle."""
    if epsilon == EPSILON_CYCLE:
        return COMPETITION_EPSILONS[batch_index % len(COMPETITION_EPSILONS)]
    return int(epsilon)


def load_dataset(dataset_dir: Path, dataset_csv: Path, problems: Problems) -> list[DatasetImage]:
    """Images named ``IMAGEID.png`` in ``dataset_dir`` that have a row in ``dataset_csv``, sorted by ImageId.

    Raises ContractFileError when the CSV cannot be read or lacks ImageId/TrueLabel. A missing
    TargetClass column, rows with bad labels and images without a row are recorded in
    ``problems``; rows naming images absent from the folder (evaluating on a subset) are a
    warning.
    """
    frame = read_dataset_csv(dataset_csv, required_columns=("ImageId", "TrueLabel"))
    has_targets = "TargetClass" in frame.columns
    if not has_targets:
        problems.add(f"{dataset_csv}: no TargetClass column; targeted attacks cannot be evaluated")
    files = {path.stem: path for path in list_png_files(dataset_dir)}
    images: list[DatasetImage] = []
    seen: set[str] = set()
    absent: list[str] = []
    for line_number, row in enumerate(frame.itertuples(index=False), start=2):
        image_id = str(getattr(row, "ImageId")).strip()
        true_label = _label(getattr(row, "TrueLabel"))
        target_class = _label(getattr(row, "TargetClass")) if has_targets else None
        if true_label is None or (has_targets and target_class is None):
            problems.add(f"{dataset_csv}:{line_number}: ImageId {image_id!r} has no valid TrueLabel/TargetClass (1..{NUM_LABELS}); skipped")
            continue
        if image_id in seen:
            problems.add(f"{dataset_csv}:{line_number}: ImageId {image_id!r} repeated; the first row is used")
            continue
        seen.add(image_id)
        if image_id not in files:
            absent.append(image_id)
            continue
        images.append(DatasetImage(image_id, str(files[image_id]), true_label, target_class))
    if absent:
        problems.warn(
            f"{dataset_csv}: {len(absent)} row(s) name images absent from {dataset_dir} (evaluating on a subset): {_some(absent)}"
        )
    without_row = sorted(set(files) - seen)
    if without_row:
        problems.add(f"{dataset_dir}: {len(without_row)} image(s) have no row in {dataset_csv} and are not evaluated: {_some(without_row)}")
    # The final round sorted file names (IMAGEID.png), which can differ from sorting the bare ids.
    return sorted(images, key=lambda image: f"{image.image_id}.png")


def _label(value: object) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number or not number.is_integer() or not 1 <= number <= NUM_LABELS:
        return None
    return int(number)


def _some(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def discover_submissions(folder: Path, kind: str, extract_root: Path, problems: Problems) -> list[Submission]:
    """Every submission in ``folder`` (sub-folders with metadata.json, or archives) declaring ``kind``.

    Archives are extracted under ``extract_root/NAME`` (kept between runs: an existing one is
    reused). A sub-folder or archive that cannot be used is recorded in ``problems`` by name.
    """
    folder = Path(folder)
    found: dict[str, Submission] = {}
    for entry in sorted(folder.iterdir(), key=lambda path: path.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name, directory = entry.name, entry
        elif entry.is_file() and entry.name.lower().endswith((*ARCHIVE_SUFFIXES, ".tgz")) and not entry.name.endswith(ARCHIVE_SUFFIXES):
            problems.add(f"{kind} {entry.name}: skipped, as the final round skipped it: only .zip, .tar and .tar.gz (case-sensitive)")
            continue
        elif entry.is_file() and entry.name.endswith(ARCHIVE_SUFFIXES):
            name = _archive_stem(entry.name)
            try:
                directory = _extracted(entry, Path(extract_root) / name)
            except ArchiveError as error:
                problems.add(f"{kind} {name}: {error}")
                continue
        else:
            continue
        if name in found:
            problems.add(f"{kind} {name}: {entry} has the same name as another submission in {folder}; skipped")
            continue
        try:
            metadata, warnings = read_metadata(directory)
        except SubmissionError as error:
            problems.add(f"{kind} {name}: {error}")
            continue
        if metadata.type != kind:
            problems.add(f"{kind} {name}: declares type {metadata.type!r} but is in the {kind} folder {folder}; skipped")
            continue
        found[name] = Submission(name=name, kind=kind, directory=str(Path(directory).resolve()), metadata=metadata)
    return list(found.values())


def _archive_stem(file_name: str) -> str:
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def _extracted(archive: Path, destination: Path) -> Path:
    if not destination.exists():
        extract_archive(archive, destination)
    return find_submission_root(destination)


@dataclass(frozen=True)
class AttackPiece:
    """One attack (either kind) on one dataset batch; outputs go under ``piece_dir``."""

    submission: Submission
    batch_index: int
    epsilon: int
    images: tuple[DatasetImage, ...]
    piece_dir: str

    @property
    def key(self) -> str:
        return f"{self.submission.kind}/{self.submission.name}/batch_{self.batch_index:04d}"

    @property
    def fingerprint(self) -> str:
        return _fingerprint([self.submission.name, self.epsilon, [image.image_id for image in self.images]])


@dataclass(frozen=True)
class DefensePiece:
    """One defense on one batch of the pool: ``pool_names`` are files ``NAME.png`` in ``pool_dir``."""

    submission: Submission
    batch_index: int
    pool_names: tuple[str, ...]
    pool_dir: str
    piece_dir: str
    pool_fingerprint: str

    @property
    def key(self) -> str:
        return f"defense/{self.submission.name}/batch_{self.batch_index:04d}"

    @property
    def fingerprint(self) -> str:
        return _fingerprint([self.submission.name, self.pool_fingerprint, list(self.pool_names)])


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def dataset_batches(images: list[DatasetImage]) -> list[tuple[DatasetImage, ...]]:
    """The dataset in batches of BATCH_IMAGES, in order; the last may be shorter."""
    return [tuple(images[start : start + BATCH_IMAGES]) for start in range(0, len(images), BATCH_IMAGES)]


def attack_pieces(attacks: list[Submission], images: list[DatasetImage], epsilon: int | str, pieces_root: Path) -> list[AttackPiece]:
    """One piece per attack and dataset batch, under ``pieces_root/KIND/NAME/batch_NNNN``."""
    pieces = []
    for submission in attacks:
        for batch_index, batch in enumerate(dataset_batches(images)):
            piece_dir = Path(pieces_root) / submission.kind / submission.name / f"batch_{batch_index:04d}"
            pieces.append(AttackPiece(submission, batch_index, epsilon_for_batch(epsilon, batch_index), batch, str(piece_dir)))
    return pieces


def defense_pieces(
    defenses: list[Submission], pool_names: list[str], pool_dir: Path, pool_fingerprint: str, pieces_root: Path
) -> list[DefensePiece]:
    """One piece per defense and pool batch of BATCH_IMAGES names (in name order)."""
    batches = [tuple(pool_names[start : start + BATCH_IMAGES]) for start in range(0, len(pool_names), BATCH_IMAGES)]
    return [
        DefensePiece(
            submission,
            batch_index,
            batch,
            str(pool_dir),
            str(Path(pieces_root) / "defense" / submission.name / f"batch_{batch_index:04d}"),
            pool_fingerprint,
        )
        for submission in defenses
        for batch_index, batch in enumerate(batches)
    ]
