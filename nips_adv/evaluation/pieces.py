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

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomically
from ..contract.constants import TARGET_CLASS_FILE
from ..contract.csv_files import ContractFileError, read_label_file, write_label_file
from ..contract.epsilon import project_to_epsilon_box
from ..contract.images import ImageReadError, read_png, resize_pixels, write_png
from ..submission.runner import Runner, RunnerError, RunResult, run_attack_submission, run_defense_submission
from .plan import AttackPiece, DefensePiece

DONE_FILE = "done.json"
ERROR_FILE = "error.json"
RESULT_FILE = "result.csv"
ATTACK_OUTPUT_SUFFIXES = (".png", ".jpg")
"""Output files the development tool picked up: IMAGEID.png or IMAGEID.jpg. The final round
took IMAGEID.png only: done.json lists the .jpg ones under ``not_png`` so that scoring can
follow either rule."""


@dataclass(frozen=True)
class RunSettings:
    """How pieces run: the runner (``local``/``docker``, ``gpu``, ``offline``) and the seconds per piece."""

    runner_kind: str = "local"
    gpu: bool = False
    offline: bool = False
    time_limit: float = 500.0

    def runner(self) -> Runner:
        return Runner(kind=self.runner_kind, gpu=self.gpu, offline=self.offline)


def read_done(piece: AttackPiece | DefensePiece) -> dict | None:
    """The piece's ``done.json`` if it finished with the same inputs, else None."""
    path = Path(piece.piece_dir) / DONE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("fingerprint") == piece.fingerprint else None


def run_piece(piece: AttackPiece | DefensePiece, settings: RunSettings) -> dict:
    """Run ``piece`` unless already done; return its ``done.json`` record (``status``: ok, failed, timed_out, error)."""
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
    record["key"] = piece.key
    record["fingerprint"] = piece.fingerprint
    # A runner that could not start (no Docker engine...) is not the submission's fault: no
    # done.json, so the next run tries again.
    _write_json_atomic(piece_dir / (ERROR_FILE if record["status"] == "error" else DONE_FILE), record)
    return record


def _run_recorded(piece: AttackPiece | DefensePiece, run: Callable[[], RunResult]) -> tuple[dict, list[str]]:
    """Run a submission; its record for done.json, and the piece's problem if it did not finish cleanly."""
    try:
        record = _run_record(run())
    except RunnerError as error:
        record = _run_record(None, str(error))
    problems = [] if record["status"] == "ok" else [f"{piece.key}: {record['outcome']}"]
    return record, problems


def _run_record(result: RunResult | None, error: str | None = None) -> dict:
    if result is None:
        return {"status": "error", "returncode": None, "seconds": 0.0, "command": [], "outcome": error}
    if result.ok:
        status = "ok"
    elif result.timed_out:
        status = "timed_out"
    else:
        status = "failed"
    return {
        "status": status,
        "returncode": result.returncode,
        "seconds": round(result.seconds, 3),
        "command": [str(part) for part in result.command],
        "outcome": result.describe(),
    }


def _private_copy(sources: list[tuple[str, str]], folder: Path) -> None:
    # A copy, not a link: the submission must not be able to change the originals.
    folder.mkdir()
    for source, name in sources:
        shutil.copyfile(source, folder / name)


def _run_attack_piece(piece: AttackPiece, settings: RunSettings) -> dict:
    piece_dir = Path(piece.piece_dir)
    input_dir, output_dir, clipped_dir = piece_dir / "input", piece_dir / "output", piece_dir / "clipped"
    _private_copy([(image.path, f"{image.image_id}.png") for image in piece.images], input_dir)
    targeted = piece.submission.kind == "targeted_attack"
    if targeted:
        write_label_file(input_dir / TARGET_CLASS_FILE, {f"{image.image_id}.png": image.target_class for image in piece.images})
    output_dir.mkdir()
    clipped_dir.mkdir()
    record, problems = _run_recorded(
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
    written, resized, unreadable, not_png = [], [], [], []
    for image in piece.images:
        output = _attack_output(output_dir, image.image_id)
        if output is None:
            continue
        if output.suffix != ".png":
            not_png.append(image.image_id)
        try:
            clean = read_png(Path(image.path))
            adversarial = read_png(output)
        except ImageReadError as error:
            unreadable.append(str(error))
            continue
        if adversarial.shape != clean.shape:
            resized.append(f"{output.name} {adversarial.shape[1]}x{adversarial.shape[0]}")
            adversarial = resize_pixels(adversarial, clean.shape[:2])
        clipped = project_to_epsilon_box(adversarial.astype(np.float32), clean, piece.epsilon)
        write_png(clipped, clipped_dir / f"{image.image_id}.png")
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
    record.update(
        kind=piece.submission.kind,
        submission=piece.submission.name,
        batch=piece.batch_index,
        epsilon=piece.epsilon,
        images=len(piece.images),
        written=written,
        not_png=not_png,
        problems=problems,
    )
    return record


def _attack_output(output_dir: Path, image_id: str) -> Path | None:
    for suffix in ATTACK_OUTPUT_SUFFIXES:
        path = output_dir / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def _run_defense_piece(piece: DefensePiece, settings: RunSettings) -> dict:
    piece_dir = Path(piece.piece_dir)
    input_dir = piece_dir / "input"
    _private_copy([(os.path.join(piece.pool_dir, f"{name}.png"), f"{name}.png") for name in piece.pool_names], input_dir)
    output_dir = piece_dir / "output"
    output_dir.mkdir()
    result_file = output_dir / RESULT_FILE
    record, problems = _run_recorded(
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
                stem = file_name[: file_name.rfind(".")] if file_name.endswith((".png", ".jpg")) else file_name
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
    record.update(
        kind="defense",
        submission=piece.submission.name,
        batch=piece.batch_index,
        images=len(piece.pool_names),
        predictions=predictions,
        problems=problems,
    )
    return record


def _write_json_atomic(path: Path, value: object) -> None:
    write_text_atomically(path, json.dumps(value, indent=1, sort_keys=True))
