"""The whole evaluation: attacks, pool, defenses, scores, report; resumable from its intermediate folder.

Intermediate folder layout::

    evaluation.json        what was evaluated (dataset images, submissions, settings)
    evaluation.log         the run log: every problem, by name
    submissions/KIND/NAME  extracted archives
    pieces/KIND/NAME/batch_NNNN/   one work piece (logs, outputs, done.json)
    all_adv_examples/      the pool (anonymous names), pool.json its key
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..atomic import write_text_atomically
from ..contract.csv_files import ContractFileError
from ..submission.metadata import SubmissionMetadata
from .executors import run_pieces
from .pieces import RunSettings, read_done
from .plan import (
    ATTACK_TRACKS,
    AttackPiece,
    DatasetImage,
    DefensePiece,
    Problems,
    Submission,
    attack_pieces,
    defense_pieces,
    discover_submissions,
    load_dataset,
)
from .pool import POOL_DIR, build_pool, load_pool
from .scoring import RULES, Scores, compute_scores, write_final_round_files, write_score_files

EVALUATION_FILE = "evaluation.json"
LOG_FILE = "evaluation.log"
PIECES_DIR = "pieces"

logger = logging.getLogger("nips_adv.evaluation")


class EvaluationError(Exception):
    """The evaluation cannot run at all (unreadable dataset CSV, no such folder, nothing to evaluate)."""


@dataclass
class EvaluationResult:
    scores: Scores
    problems: list[str]
    pieces: list[dict]
    output_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Reported, but no reason for exit status 1 (e.g. a dataset CSV covering more images)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def evaluate(
    *,
    attacks_dir: Path | None,
    targeted_attacks_dir: Path | None,
    defenses_dir: Path,
    dataset_dir: Path,
    dataset_metadata: Path,
    intermediate_dir: Path,
    output_dir: Path,
    epsilon: int | str = 16,
    save_all_classification: bool = False,
    rules: str = "final",
    settings: RunSettings = RunSettings(),
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Run every attack on the dataset, every defense on the pool, and write scores and report to ``output_dir``.

    ``rules``: ``final`` (the final round's scoring and files) or ``dev`` (the development
    tool's). Pieces finished in an earlier run with the same ``intermediate_dir`` are not run again.
    Raises EvaluationError when nothing can be evaluated; every other problem is logged and
    listed in the result.
    """
    intermediate_dir = Path(intermediate_dir).resolve()
    intermediate_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log(intermediate_dir / LOG_FILE)
    try:
        problems = Problems()
        try:
            images = load_dataset(Path(dataset_dir), Path(dataset_metadata), problems)
        except ContractFileError as error:
            raise EvaluationError(str(error)) from None
        if not images:
            raise EvaluationError(f"{dataset_dir}: no image is both in the folder and in {dataset_metadata}")
        submissions: dict[str, list[Submission]] = {}
        for kind, folder in (("attack", attacks_dir), ("targeted_attack", targeted_attacks_dir), ("defense", defenses_dir)):
            submissions[kind] = (
                discover_submissions(Path(folder), kind, intermediate_dir / "submissions" / kind, problems) if folder else []
            )
        if images[0].target_class is None and submissions["targeted_attack"]:
            submissions["targeted_attack"] = []
        for line in problems.lines + problems.warnings:
            logger.warning(line)
        logger.info(
            "found %d attack(s), %d targeted attack(s), %d defense(s); %d image(s)",
            *(len(submissions[kind]) for kind in ("attack", "targeted_attack", "defense")),
            len(images),
        )
        _write_json(
            intermediate_dir / EVALUATION_FILE,
            {
                "images": [asdict(image) for image in images],
                "submissions": {kind: [_submission_json(item) for item in items] for kind, items in submissions.items()},
                "epsilon": epsilon,
                "settings": asdict(settings),
                "output_dir": str(Path(output_dir).resolve()),
                "save_all_classification": save_all_classification,
                "rules": rules,
                "problems": problems.lines,
                "warnings": problems.warnings,
            },
        )
        pieces_root = intermediate_dir / PIECES_DIR
        attacks = submissions["attack"] + submissions["targeted_attack"]
        _run_stage("attacks", attack_pieces(attacks, images, epsilon, pieces_root), settings, executor, jobs, address, progress)

        clipped = []
        for piece in attack_pieces(attacks, images, epsilon, pieces_root):
            record = read_done(piece) or {}
            for image_id in record.get("written", []):
                clipped.append((piece.submission.kind, piece.submission.name, image_id, str(Path(piece.piece_dir) / "clipped" / f"{image_id}.png")))
        pool = build_pool(intermediate_dir, images, clipped)
        pieces = defense_pieces(submissions["defense"], pool.names, intermediate_dir / POOL_DIR, pool.fingerprint, pieces_root)
        _run_stage("defenses", pieces, settings, executor, jobs, address, progress)
        return finish(intermediate_dir, output_dir=Path(output_dir))
    finally:
        logging.getLogger("nips_adv").removeHandler(handler)
        handler.close()


def _run_stage(label, pieces, settings, executor, jobs, address, progress) -> None:
    counts = {"running": 0, "failed": 0}
    bar = tqdm(total=len(pieces), desc=label, unit="piece", disable=not progress, dynamic_ncols=True)
    already = [piece for piece in pieces if read_done(piece) is not None]
    bar.update(len(already))
    todo = [piece for piece in pieces if read_done(piece) is None]
    if already:
        logger.info("%s: %d piece(s) already done, %d to run", label, len(already), len(todo))

    def on_start(piece) -> None:
        counts["running"] += 1
        bar.set_postfix(running=counts["running"], failed=counts["failed"], refresh=True)

    with bar:
        for piece, record in run_pieces(todo, settings, executor=executor, jobs=jobs, address=address, on_start=on_start):
            counts["running"] = max(0, counts["running"] - 1)
            if record.get("status") != "ok":
                counts["failed"] += 1
            for line in record.get("problems", []):
                logger.warning(line)
            bar.update(1)
            bar.set_postfix(running=counts["running"], failed=counts["failed"], refresh=True)


def _submission_json(submission: Submission) -> dict:
    return {"name": submission.name, "kind": submission.kind, "directory": submission.directory, "metadata": asdict(submission.metadata)}


def _submission_from_json(document: dict) -> Submission:
    return Submission(document["name"], document["kind"], document["directory"], SubmissionMetadata(**document["metadata"]))


def finish(
    intermediate_dir: Path, *, output_dir: Path | None = None, score_files: bool = True, rules: str | None = None
) -> EvaluationResult:
    """Score what ``intermediate_dir`` holds and write the score files, results.json and report.html.

    ``output_dir`` defaults to the one the evaluation was run with, ``rules`` to its rules
    (``final`` for folders written before there was a choice). Pieces never run, or run for
    another pool, count as producing nothing. ``nips-adv report`` calls this with
    ``score_files=False``.
    """
    from .report import write_report

    intermediate_dir = Path(intermediate_dir).resolve()
    try:
        state = json.loads((intermediate_dir / EVALUATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EvaluationError(f"{intermediate_dir / EVALUATION_FILE}: cannot read ({error}); is this an evaluation's intermediate folder?") from None
    output_dir = Path(output_dir or state["output_dir"])
    images = [DatasetImage(**image) for image in state["images"]]
    submissions = {kind: [_submission_from_json(item) for item in items] for kind, items in state["submissions"].items()}
    pieces_root = intermediate_dir / PIECES_DIR
    problems = list(state.get("problems", []))
    rules = rules or state.get("rules", "final")
    if rules not in RULES:
        raise EvaluationError(f"unknown rules {rules!r}; expected one of {', '.join(RULES)}")
    records = []
    not_png: set[tuple[str, str, str]] = set()
    attacks = submissions["attack"] + submissions["targeted_attack"]
    for piece in attack_pieces(attacks, images, state["epsilon"], pieces_root):
        record = read_done(piece)
        records.append(_piece_summary(piece, record, problems))
        for image_id in (record or {}).get("not_png", []):
            not_png.add((piece.submission.kind, piece.submission.name, image_id))
    pool = load_pool(intermediate_dir)
    predictions: dict[str, dict[str, int]] = {defense.name: {} for defense in submissions["defense"]}
    if pool is not None:
        for piece in defense_pieces(submissions["defense"], pool.names, intermediate_dir / POOL_DIR, pool.fingerprint, pieces_root):
            record = read_done(piece)
            records.append(_piece_summary(piece, record, problems))
            if record is not None:
                predictions[piece.submission.name].update(record.get("predictions", {}))
    elif submissions["defense"]:
        problems.append(f"{intermediate_dir}: no pool yet; defenses were not run")
    scores = compute_scores(
        images,
        pool if pool is not None else _empty_pool(),
        predictions,
        attacks=[item.name for item in submissions["attack"]],
        targeted_attacks=[item.name for item in submissions["targeted_attack"]],
        defenses=[item.name for item in submissions["defense"]],
        rules=rules,
        not_png=frozenset(not_png),
    )
    result = EvaluationResult(scores=scores, problems=problems, pieces=records, warnings=list(state.get("warnings", [])))
    if score_files:
        result.output_files = write_score_files(output_dir, scores, save_all_classification=state["save_all_classification"])
        if rules == "final":
            result.output_files += write_final_round_files(output_dir, scores, records)
    result.output_files += write_report(
        output_dir,
        scores=scores,
        state=state,
        pool=pool,
        predictions=predictions,
        pieces=records,
        problems=problems,
        intermediate_dir=intermediate_dir,
    )
    return result


def _empty_pool():
    from .pool import Pool

    return Pool({}, "")


def _piece_summary(piece: AttackPiece | DefensePiece, record: dict | None, problems: list[str]) -> dict:
    if record is None:
        problems.append(f"{piece.key}: not run")
        return {
            "key": piece.key, "kind": piece.submission.kind, "submission": piece.submission.name, "batch": piece.batch_index,
            "status": "not_run", "returncode": None, "seconds": None, "outcome": "not run", "images": None, "epsilon": None, "produced": 0,
        }
    problems.extend(record.get("problems", []))
    summary = {name: record.get(name) for name in ("key", "kind", "submission", "batch", "status", "returncode", "seconds", "outcome", "images", "epsilon")}
    summary["produced"] = len(record.get("written", record.get("predictions", [])))
    return summary


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("nips_adv")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def _write_json(path: Path, value: object) -> None:
    write_text_atomically(path, json.dumps(value, indent=1))


__all__ = ["ATTACK_TRACKS", "EvaluationError", "EvaluationResult", "evaluate", "finish"]
