"""The whole evaluation: attacks, pool, defenses, scores, report; resumable from its intermediate folder.

The intermediate folder's layout is ``layout``'s; ``evaluation.json`` holds the plan.Evaluation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..contract.atomic import write_text_atomically
from ..contract.constants import DEFAULT_EPSILON
from ..contract.csv_files import ContractFileError
from .executors import run_pieces
from .layout import EvaluationLayout, clipped_image
from .matrices import RULES, Scores, compute_scores, write_final_round_files, write_score_files
from .pieces import Piece, PieceRecord, read_done
from .plan import (
    Evaluation,
    Problems,
    RunSettings,
    attack_pieces,
    defense_pieces,
    discover_submissions,
    load_dataset,
)
from .pool import Pool, build_pool, load_pool

logger = logging.getLogger("nips_adv.evaluation")


class EvaluationError(Exception):
    """The evaluation cannot run at all (unreadable dataset CSV, no such folder, nothing to evaluate)."""


@dataclass
class EvaluationResult:
    scores: Scores
    problems: list[str]
    pieces: list[PieceRecord]
    output_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Reported, but no reason for exit status 1 (e.g. a dataset CSV covering more images)."""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Execution:
    """Where pieces run: ``executor`` (local threads or ray), ``jobs`` at once, the Ray ``address``, progress bars."""

    executor: str = "local"
    jobs: int = 1
    address: str | None = None
    progress: bool = True


def evaluate(
    *,
    attacks_dir: Path | None,
    targeted_attacks_dir: Path | None,
    defenses_dir: Path,
    dataset_dir: Path,
    dataset_metadata: Path,
    intermediate_dir: Path,
    output_dir: Path,
    epsilon: int | str = DEFAULT_EPSILON,
    save_all_classification: bool = False,
    rules: str = "final",
    settings: RunSettings = RunSettings(),
    execution: Execution = Execution(),
) -> EvaluationResult:
    """Run every attack on the dataset, every defense on the pool, and write scores and report to ``output_dir``.

    ``epsilon``: MAX_EPSILON, or ``cycle`` (4, 8, 12, 16 per batch). ``rules``: ``final`` (the
    final round's scoring and files) or ``dev`` (the development tool's). Pieces finished in an
    earlier run with the same ``intermediate_dir`` are not run again. Raises EvaluationError when
    nothing can be evaluated; every other problem is logged and listed in the result.
    """
    layout = EvaluationLayout(Path(intermediate_dir).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    handler = _attach_log(layout.log_file)
    try:
        problems = Problems()
        try:
            images = load_dataset(Path(dataset_dir), Path(dataset_metadata), problems)
        except ContractFileError as error:
            raise EvaluationError(str(error)) from None
        if not images:
            raise EvaluationError(f"{dataset_dir}: no image is both in the folder and in {dataset_metadata}")
        folders = {"attack": attacks_dir, "targeted_attack": targeted_attacks_dir, "defense": defenses_dir}
        submissions = {
            kind: discover_submissions(Path(folder), kind, layout.extracted_dir(kind), problems) if folder else []
            for kind, folder in folders.items()
        }
        if images[0].target_class is None:
            submissions["targeted_attack"] = []
        for line in problems.lines + problems.warnings:
            logger.warning(line)
        evaluation = Evaluation(
            images=images,
            submissions=submissions,
            epsilon=epsilon,
            settings=settings,
            output_dir=str(Path(output_dir).resolve()),
            save_all_classification=save_all_classification,
            rules=rules,
            problems=problems.lines,
            warnings=problems.warnings,
        )
        logger.info(
            "found %d attack(s), %d targeted attack(s), %d defense(s); %d image(s)",
            *(len(submissions[kind]) for kind in ("attack", "targeted_attack", "defense")),
            len(images),
        )
        write_text_atomically(layout.evaluation_file, json.dumps(evaluation.to_json(), indent=1))
        attacks = attack_pieces(evaluation.attacks, images, epsilon, layout.pieces_dir)
        records = _run_stage("attacks", attacks, settings, execution)

        clipped = [
            (piece.submission.kind, piece.submission.name, image_id, str(clipped_image(Path(piece.piece_dir), image_id)))
            for piece in attacks
            if piece.key in records
            for image_id in records[piece.key].written
        ]
        pool = build_pool(layout.root, images, clipped)
        defenses = defense_pieces(submissions["defense"], pool.names, layout.pool_dir, pool.fingerprint, layout.pieces_dir)
        records |= _run_stage("defenses", defenses, settings, execution)
        return _score_and_report(layout, evaluation, pool, records, output_dir=Path(output_dir), score_files=True, rules=rules)
    finally:
        logging.getLogger("nips_adv").removeHandler(handler)
        handler.close()


def _run_stage(label: str, pieces: Sequence[Piece], settings: RunSettings, execution: Execution) -> dict[str, PieceRecord]:
    """Run the pieces not done yet; the record of every piece that has a done.json now, by key."""
    counts = {"running": 0, "failed": 0}
    bar = tqdm(total=len(pieces), desc=label, unit="piece", disable=not execution.progress, dynamic_ncols=True)
    done = {piece.key: record for piece in pieces if (record := read_done(piece)) is not None}
    todo = [piece for piece in pieces if piece.key not in done]
    bar.update(len(done))
    if done:
        logger.info("%s: %d piece(s) already done, %d to run", label, len(done), len(todo))

    def on_start(piece: Piece) -> None:
        counts["running"] += 1
        bar.set_postfix(running=counts["running"], failed=counts["failed"], refresh=True)

    with bar:
        pieces_run = run_pieces(todo, settings, executor=execution.executor, jobs=execution.jobs, address=execution.address, on_start=on_start)
        for piece, record in pieces_run:
            counts["running"] = max(0, counts["running"] - 1)
            if record.status != "ok":
                counts["failed"] += 1
            if record.status != "error":  # no done.json: the next run tries again, so it counts as not run
                done[piece.key] = record
            for line in record.problems:
                logger.warning(line)
            bar.update(1)
            bar.set_postfix(running=counts["running"], failed=counts["failed"], refresh=True)
    return done


def load_evaluation(layout: EvaluationLayout) -> Evaluation:
    """The ``evaluation.json`` of ``layout``; EvaluationError when there is none or it is not one."""
    try:
        return Evaluation.from_json(json.loads(layout.evaluation_file.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EvaluationError(
            f"{layout.evaluation_file}: cannot read ({error}); is this an evaluation's intermediate folder?"
        ) from None


def finish(
    intermediate_dir: Path, *, output_dir: Path | None = None, score_files: bool = True, rules: str | None = None
) -> EvaluationResult:
    """Score what ``intermediate_dir`` holds and write the score files, results.json and report.html.

    ``output_dir`` defaults to the one the evaluation was run with, ``rules`` to its rules.
    Pieces never run, or run for another pool, count as producing nothing. ``nips-adv report``
    calls this with ``score_files=False``.
    """
    layout = EvaluationLayout(Path(intermediate_dir).resolve())
    evaluation = load_evaluation(layout)
    return _score_and_report(
        layout,
        evaluation,
        load_pool(layout.root),
        None,
        output_dir=Path(output_dir or evaluation.output_dir),
        score_files=score_files,
        rules=rules or evaluation.rules,
    )


def _score_and_report(
    layout: EvaluationLayout,
    evaluation: Evaluation,
    pool: Pool | None,
    records_by_key: Mapping[str, PieceRecord] | None,
    *,
    output_dir: Path,
    score_files: bool,
    rules: str,
) -> EvaluationResult:
    """Scores, score files and report from what the run holds; ``records_by_key`` None: read each done.json."""
    from .report import write_report

    if rules not in RULES:
        raise EvaluationError(f"unknown rules {rules!r}; expected one of {', '.join(RULES)}")
    problems = list(evaluation.problems)

    def record_of(piece: Piece) -> PieceRecord:
        record = read_done(piece) if records_by_key is None else records_by_key.get(piece.key)
        if record is None:
            problems.append(f"{piece.key}: not run")
            return PieceRecord.not_run(piece)
        problems.extend(record.problems)
        return record

    records = [record_of(piece) for piece in attack_pieces(evaluation.attacks, evaluation.images, evaluation.epsilon, layout.pieces_dir)]
    not_png = frozenset((record.kind, record.submission, image_id) for record in records for image_id in record.not_png)
    predictions: dict[str, dict[str, int]] = {name: {} for name in evaluation.names("defense")}
    if pool is not None:
        for piece in defense_pieces(evaluation.submissions["defense"], pool.names, layout.pool_dir, pool.fingerprint, layout.pieces_dir):
            record = record_of(piece)
            records.append(record)
            predictions[record.submission].update(record.predictions)
    elif evaluation.submissions["defense"]:
        problems.append(f"{layout.root}: no pool yet; defenses were not run")
    scores = compute_scores(
        evaluation.images,
        pool if pool is not None else Pool({}, ""),
        predictions,
        attacks=evaluation.names("attack"),
        targeted_attacks=evaluation.names("targeted_attack"),
        defenses=evaluation.names("defense"),
        rules=rules,
        not_png=not_png,
    )
    result = EvaluationResult(scores=scores, problems=problems, pieces=records, warnings=list(evaluation.warnings))
    if score_files:
        result.output_files = write_score_files(output_dir, scores, save_all_classification=evaluation.save_all_classification)
        if rules == "final":
            result.output_files += write_final_round_files(output_dir, scores, records)
    result.output_files += write_report(
        output_dir, evaluation=evaluation, layout=layout, scores=scores, pool=pool, predictions=predictions, records=records, problems=problems
    )
    return result


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("nips_adv")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


__all__ = ["EvaluationError", "EvaluationResult", "Execution", "evaluate", "finish"]
