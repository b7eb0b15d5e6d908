"""Find submissions and dataset images, and cut the evaluation into work pieces.

A work piece is one submission on one batch of at most BATCH_IMAGES images. Attack batches
take the dataset images sorted by name, as the final round did (eval_lib/image_batches.py);
batch k gets its own epsilon (``cycle``: the final round's COMPETITION_EPSILONS[k % 4]). Everything here is plain data, so pieces pickle for Ray.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..contract.constants import BATCH_IMAGES, BATCH_TIME_LIMIT_S, COMPETITION_EPSILONS
from ..contract.csv_files import labelled_rows, read_dataset
from ..contract.images import image_file_name, image_id_of, list_png_files
from ..submission.archives import ARCHIVE_SUFFIXES, ArchiveError, extract_archive, find_submission_root
from ..submission.metadata import SubmissionError, SubmissionMetadata, read_metadata
from .layout import batch_name, piece_dir

if TYPE_CHECKING:
    from ..submission.runner import Runner

CLEAN_TRACK = "clean"
"""Pseudo-track of the clean images that defenses also classify (reported, never scored)."""

EPSILON_CYCLE = "cycle"

T = TypeVar("T")


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


@dataclass(frozen=True)
class RunSettings:
    """How pieces run: the runner (``local``/``docker``, ``gpu``, ``offline``) and the seconds per piece."""

    runner_kind: str = "local"
    gpu: bool = False
    offline: bool = False
    time_limit: float = BATCH_TIME_LIMIT_S

    def runner(self) -> Runner:
        from ..submission.runner import Runner

        return Runner(kind=self.runner_kind, gpu=self.gpu, offline=self.offline)


@dataclass
class Evaluation:
    """What was evaluated and how (``evaluation.json``): the resumed run and the report start from it."""

    images: list[DatasetImage]
    submissions: dict[str, list[Submission]]
    """``attack``, ``targeted_attack``, ``defense`` -> the usable submissions of that kind."""
    epsilon: int | str
    settings: RunSettings
    output_dir: str
    save_all_classification: bool
    rules: str
    problems: list[str]
    warnings: list[str]

    @property
    def attacks(self) -> list[Submission]:
        """Attacks of both kinds, non-targeted first."""
        return self.submissions["attack"] + self.submissions["targeted_attack"]

    def names(self, kind: str) -> list[str]:
        return [submission.name for submission in self.submissions[kind]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Evaluation:
        """Raises KeyError or TypeError when ``document`` is not an evaluation.json."""
        return cls(
            images=[DatasetImage(**image) for image in document["images"]],
            submissions={
                kind: [Submission(item["name"], item["kind"], item["directory"], SubmissionMetadata(**item["metadata"])) for item in items]
                for kind, items in document["submissions"].items()
            },
            epsilon=document["epsilon"],
            settings=RunSettings(**document["settings"]),
            output_dir=document["output_dir"],
            save_all_classification=document["save_all_classification"],
            # Folders written before there was a choice were scored by the final round's rules.
            rules=document.get("rules", "final"),
            problems=list(document.get("problems", [])),
            warnings=list(document.get("warnings", [])),
        )


def epsilon_for_batch(epsilon: int | str, batch_index: int) -> int:
    """MAX_EPSILON of dataset batch ``batch_index``: ``epsilon`` itself, or the final round's cycle."""
    if epsilon == EPSILON_CYCLE:
        return COMPETITION_EPSILONS[batch_index % len(COMPETITION_EPSILONS)]
    return int(epsilon)


def load_dataset(dataset_dir: Path, dataset_csv: Path, problems: Problems) -> list[DatasetImage]:
    """Images named ``IMAGEID.png`` in ``dataset_dir`` that have a row in ``dataset_csv``, sorted by file name.

    Raises ContractFileError when the CSV cannot be read or lacks ImageId/TrueLabel. A missing
    TargetClass column, rows with bad labels and images without a row are recorded in
    ``problems``; rows naming images absent from the folder (evaluating on a subset) are a
    warning.
    """
    table = read_dataset(dataset_csv, required_columns=("ImageId", "TrueLabel"))
    has_targets = "TargetClass" in table.columns
    if not has_targets:
        problems.add(f"{dataset_csv}: no TargetClass column; targeted attacks cannot be evaluated")
    rows, skipped = labelled_rows(table, need_target=has_targets)
    for line in skipped:
        problems.add(line)
    files = {image_id_of(path.name): path for path in list_png_files(dataset_dir)}
    images = [DatasetImage(row.image_id, str(files[row.image_id]), row.true_label, row.target_class) for row in rows if row.image_id in files]  # type: ignore[arg-type]
    absent = [row.image_id for row in rows if row.image_id not in files]
    if absent:
        problems.warn(
            f"{dataset_csv}: {len(absent)} row(s) name images absent from {dataset_dir} (evaluating on a subset): {_some(absent)}"
        )
    without_row = sorted(set(files) - {row.image_id for row in rows})
    if without_row:
        problems.add(f"{dataset_dir}: {len(without_row)} image(s) have no row in {dataset_csv} and are not evaluated: {_some(without_row)}")
    # The final round sorted file names (IMAGEID.png), which can differ from sorting the bare ids.
    return sorted(images, key=lambda image: image_file_name(image.image_id))


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
        return f"{self.submission.kind}/{self.submission.name}/{batch_name(self.batch_index)}"

    @property
    def fingerprint(self) -> str:
        return digest([self.submission.name, self.epsilon, [image.image_id for image in self.images]])


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
        return f"defense/{self.submission.name}/{batch_name(self.batch_index)}"

    @property
    def fingerprint(self) -> str:
        return digest([self.submission.name, self.pool_fingerprint, list(self.pool_names)])


def digest(value: object) -> str:
    """A short digest of ``value`` (JSON-able): a piece or pool whose inputs change gets a new one."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def batches(items: Sequence[T]) -> list[tuple[T, ...]]:
    """``items`` in batches of BATCH_IMAGES, in order; the last may be shorter."""
    return [tuple(items[start : start + BATCH_IMAGES]) for start in range(0, len(items), BATCH_IMAGES)]


def attack_pieces(attacks: list[Submission], images: list[DatasetImage], epsilon: int | str, pieces_root: Path) -> list[AttackPiece]:
    """One piece per attack and dataset batch, under ``pieces_root/KIND/NAME/batch_NNNN``."""
    pieces = []
    for submission in attacks:
        for batch_index, batch in enumerate(batches(images)):
            folder = piece_dir(pieces_root, submission.kind, submission.name, batch_index)
            pieces.append(AttackPiece(submission, batch_index, epsilon_for_batch(epsilon, batch_index), batch, str(folder)))
    return pieces


def defense_pieces(
    defenses: list[Submission], pool_names: list[str], pool_dir: Path, pool_fingerprint: str, pieces_root: Path
) -> list[DefensePiece]:
    """One piece per defense and pool batch of BATCH_IMAGES names (in name order)."""
    return [
        DefensePiece(
            submission,
            batch_index,
            batch,
            str(pool_dir),
            str(piece_dir(pieces_root, "defense", submission.name, batch_index)),
            pool_fingerprint,
        )
        for submission in defenses
        for batch_index, batch in enumerate(batches(pool_names))
    ]
