"""Run one work piece: a pure function of the piece and the run settings, so Ray can run it too.

Each piece works only inside its own folder and writes ``done.json`` last; a folder without
``done.json`` (an interrupted run) is cleared and run again, one with a ``done.json`` of the
same fingerprint is skipped. A failed or timed-out run still scores what it wrote, as the
organisers scored it.

Attack piece folder: ``input/`` (a private copy of the batch, plus target_class.csv for targeted
attacks; removed afterwards), ``output/`` (what the attack wrote), ``clipped/`` (each output
resized back if needed and clipped to the epsilon box, named ``IMAGEID.png``), logs.
Defense piece folder: ``input/`` (a private copy of its pool batch; removed afterwards),
``result.csv``, logs; ``done.json`` holds the predictions.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..contract.atomic import write_text_atomically
from ..contract.attack_outputs import check_attack_output
from ..contract.constants import TARGET_CLASS_FILE
from ..contract.csv_files import ContractFileError, read_label_file, write_label_file
from ..contract.images import ImageReadError, image_file_name, image_id_of, read_png, write_png
from ..submission.runner import KEEPER_HOLDS, RunnerError, RunResult, run_attack_submission, run_defense_submission
from .layout import CLIPPED_DIR, DONE_FILE, ERROR_FILE, INPUT_DIR, OUTPUT_DIR, RESULT_FILE, clipped_image
from .plan import AttackPiece, DefensePiece, RunSettings

Piece = AttackPiece | DefensePiece

ATTACK_OUTPUT_SUFFIXES = (".png", ".jpg")
"""Output files the development tool picked up: IMAGEID.png or IMAGEID.jpg. The final round
took IMAGEID.png only: done.json lists the .jpg ones under ``not_png`` so that scoring can
follow either rule."""
NOT_RUN = "not_run"


@dataclass
class PieceRecord:
    """What one piece did (its ``done.json``): ``status`` is ok, failed, timed_out, error or not_run."""

    key: str
    kind: str
    submission: str
    batch: int
    status: str
    fingerprint: str = ""
    returncode: int | None = None
    seconds: float | None = None
    command: list[str] = field(default_factory=list)
    outcome: str = ""
    images: int | None = None
    epsilon: int | None = None
    """Attack pieces: the MAX_EPSILON of this batch."""
    written: list[str] = field(default_factory=list)
    """Attack pieces: ImageIds of the clipped adversarial images, in batch order."""
    not_png: list[str] = field(default_factory=list)
    """Attack pieces: ImageIds the attack wrote as IMAGEID.jpg (counted by the dev rules only)."""
    predictions: dict[str, int] = field(default_factory=dict)
    """Defense pieces: pool name -> label 1..1000."""
    problems: list[str] = field(default_factory=list)

    @classmethod
    def not_run(cls, piece: Piece) -> PieceRecord:
        return cls(piece.key, piece.submission.kind, piece.submission.name, piece.batch_index, NOT_RUN, outcome="not run")

    @property
    def produced(self) -> int:
        """Adversarial images written (attacks) or images classified (defenses)."""
        return len(self.predictions) if self.kind == "defense" else len(self.written)

    def summary(self) -> dict[str, Any]:
        """The record without its per-image lists: one line of the report's piece table and of results.json."""
        names = ("key", "kind", "submission", "batch", "status", "returncode", "seconds", "outcome", "images", "epsilon")
        return {name: getattr(self, name) for name in names} | {"produced": self.produced}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: object) -> PieceRecord | None:
        """The record in ``document``, or None when it is not one (a file from another version, damaged)."""
        if not isinstance(document, dict):
            return None
        known = {item.name for item in fields(cls)}
        try:
            return cls(**{name: value for name, value in document.items() if name in known})
        except TypeError:
            return None


def read_done(piece: Piece) -> PieceRecord | None:
    """The piece's ``done.json`` if it finished with the same inputs, else None."""
    try:
        document = json.loads((Path(piece.piece_dir) / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = PieceRecord.from_json(document)
    return record if record is not None and record.fingerprint == piece.fingerprint else None


@contextmanager
def piece_lock(piece_dir: Path) -> Iterator[None]:
    """Hold ``PIECE_DIR.lock`` (flock) while the piece runs: a resumed or second evaluate waits for a live
    writer, whether another evaluate or the keeper of a killed one (it inherits the lock: ``KEEPER_HOLDS``),
    instead of sharing the folder with it. The kernel drops the lock with its last holder, even on SIGKILL."""
    lock_path = piece_dir.with_name(piece_dir.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger("nips_adv").info("%s: another process is still writing it; waiting for it to end", piece_dir.name)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        token = KEEPER_HOLDS.set((*KEEPER_HOLDS.get(), descriptor))
        try:
            yield
        finally:
            KEEPER_HOLDS.reset(token)
    finally:
        os.close(descriptor)


def run_piece(piece: Piece, settings: RunSettings) -> PieceRecord:
    """Run ``piece`` unless already done; return its record (also written to ``done.json``)."""
    with piece_lock(Path(piece.piece_dir)):
        return _run_piece_locked(piece, settings)


def _run_piece_locked(piece: Piece, settings: RunSettings) -> PieceRecord:
    record = read_done(piece)
    if record is not None:
        return record
    piece_dir = Path(piece.piece_dir)
    if piece_dir.exists():
        shutil.rmtree(piece_dir)
    piece_dir.mkdir(parents=True)
    if isinstance(piece, AttackPiece):
        record = _run_attack_piece(piece, settings)
    else:
        record = _run_defense_piece(piece, settings)
    # A runner that could not start (no Docker engine...) is not the submission's fault: no
    # done.json, so the next run tries again.
    done_file = piece_dir / (ERROR_FILE if record.status == "error" else DONE_FILE)
    write_text_atomically(done_file, json.dumps(record.to_json(), indent=1, sort_keys=True))
    return record


def _run_recorded(piece: Piece, run: Callable[[], RunResult]) -> PieceRecord:
    """Run a submission; its record, with the piece's problem if it did not finish cleanly."""
    record = PieceRecord(piece.key, piece.submission.kind, piece.submission.name, piece.batch_index, "error", fingerprint=piece.fingerprint)
    try:
        result = run()
    except RunnerError as error:
        record.seconds, record.outcome = 0.0, str(error)
    else:
        record.status = "ok" if result.ok else "timed_out" if result.timed_out else "failed"
        record.returncode = result.returncode
        record.seconds = round(result.seconds, 3)
        record.command = [str(part) for part in result.command]
        record.outcome = result.describe()
    if record.status != "ok":
        record.problems.append(f"{piece.key}: {record.outcome}")
    return record


def _private_copy(sources: list[tuple[str, str]], folder: Path) -> None:
    # A copy, not a link: the submission must not be able to change the originals.
    folder.mkdir()
    for source, name in sources:
        shutil.copyfile(source, folder / name)


def _run_attack_piece(piece: AttackPiece, settings: RunSettings) -> PieceRecord:
    piece_dir = Path(piece.piece_dir)
    input_dir, output_dir = piece_dir / INPUT_DIR, piece_dir / OUTPUT_DIR
    _private_copy([(image.path, image_file_name(image.image_id)) for image in piece.images], input_dir)
    if piece.submission.kind == "targeted_attack":
        targets = {image_file_name(image.image_id): image.target_class for image in piece.images if image.target_class is not None}
        write_label_file(input_dir / TARGET_CLASS_FILE, targets)
    output_dir.mkdir()
    (piece_dir / CLIPPED_DIR).mkdir()
    record = _run_recorded(
        piece,
        lambda: run_attack_submission(
            Path(piece.submission.directory),
            piece.submission.metadata,
            input_dir,
            output_dir,
            piece.epsilon,
            time_limit=settings.time_limit,
            log_dir=piece_dir,
            runner=settings.runner(),
        ),
    )
    written: list[str] = []
    resized: list[str] = []
    unreadable: list[str] = []
    not_png: list[str] = []
    problems = record.problems
    for image in piece.images:
        output = _attack_output(output_dir, image.image_id)
        if output is None:
            continue
        if output.suffix != ".png":
            not_png.append(image.image_id)
        try:
            clean = read_png(Path(image.path))
        except ImageReadError as error:
            unreadable.append(str(error))
            continue
        checked = check_attack_output(output, clean, piece.epsilon, wrong_size="resize")
        if checked.scored is None:
            unreadable.append(checked.problem("unreadable") or output.name)
            continue
        wrong_size = checked.problem("size")
        if wrong_size is not None:
            resized.append(wrong_size.replace(" is ", " "))
        clipped = checked.scored
        write_png(clipped, clipped_image(piece_dir, image.image_id))
        written.append(image.image_id)
    missing = [image.image_id for image in piece.images if image.image_id not in set(written)]
    if unreadable:
        problems.append(f"{piece.key}: {len(unreadable)} output(s) are not images; first: {unreadable[0]}")
    if resized:
        problems.append(f"{piece.key}: {len(resized)} output(s) of the wrong size, resized back (bicubic): {', '.join(resized[:5])}")
    if missing:
        problems.append(f"{piece.key}: {len(missing)} of {len(piece.images)} adversarial image(s) missing or unreadable (score zero)")
    if not_png:
        problems.append(
            f"{piece.key}: {len(not_png)} output(s) written as IMAGEID.jpg, not IMAGEID.png: the development tool took them, "
            f"the final round did not (--rules): {', '.join(not_png[:5])}"
        )
    shutil.rmtree(input_dir, ignore_errors=True)
    record.epsilon, record.images, record.written, record.not_png = piece.epsilon, len(piece.images), written, not_png
    return record


def _attack_output(output_dir: Path, image_id: str) -> Path | None:
    for suffix in ATTACK_OUTPUT_SUFFIXES:
        path = output_dir / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def _run_defense_piece(piece: DefensePiece, settings: RunSettings) -> PieceRecord:
    piece_dir = Path(piece.piece_dir)
    input_dir = piece_dir / INPUT_DIR
    _private_copy([(str(Path(piece.pool_dir) / image_file_name(name)), image_file_name(name)) for name in piece.pool_names], input_dir)
    output_dir = piece_dir / OUTPUT_DIR
    output_dir.mkdir()
    result_file = output_dir / RESULT_FILE
    record = _run_recorded(
        piece,
        lambda: run_defense_submission(
            Path(piece.submission.directory),
            piece.submission.metadata,
            input_dir,
            result_file,
            time_limit=settings.time_limit,
            log_dir=piece_dir,
            runner=settings.runner(),
        ),
    )
    problems = record.problems
    predictions: dict[str, int] = {}
    if result_file.is_file():
        try:
            labels = read_label_file(result_file)
        except ContractFileError as error:
            problems.append(f"{piece.key}: {error}")
        else:
            if labels.problems:
                problems.append(f"{piece.key}: {len(labels.problems)} malformed row(s) ignored; first: {labels.problems[0]}")
            batch = set(piece.pool_names)
            unknown = []
            for file_name, label in labels.labels.items():
                # As the organisers: a .png/.jpg suffix is dropped, the rest must name an input image.
                stem = image_id_of(file_name, (".png", ".jpg"), any_case=False)
                if stem in batch:
                    predictions[stem] = label
                else:
                    unknown.append(file_name)
            if unknown:
                problems.append(f"{piece.key}: {len(unknown)} row(s) name images not in its input: {', '.join(unknown[:5])}")
    else:
        problems.append(f"{piece.key}: no {RESULT_FILE} written")
    unclassified = len(piece.pool_names) - len(predictions)
    if unclassified and result_file.is_file():
        problems.append(f"{piece.key}: {unclassified} of {len(piece.pool_names)} image(s) not classified (counted as wrong)")
    shutil.rmtree(input_dir, ignore_errors=True)
    record.images, record.predictions = len(piece.pool_names), predictions
    return record
