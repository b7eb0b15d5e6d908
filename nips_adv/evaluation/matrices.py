"""The organisers' matrices and rankings, from the pool and the defenses' classifications.

Matrices have rows = attacks and columns = defenses (names sorted), values are counts:
``accuracy_on_attacks`` (correct classifications of each non-targeted attack's images),
``accuracy_on_targeted_attacks`` and ``hit_target_class`` (predictions equal to TargetClass).
Scores, as the organisers computed them, higher is better:

- defense: correct classifications of adversarial images of both attack kinds;
- non-targeted attack: (image, defense) pairs where the defense is wrong;
- targeted attack: (image, defense) pairs where the defense outputs the target class.

Normalised score = score / (images x opponents): images = dataset images evaluated,
opponents = defenses (for attacks) or attacks of both kinds (for defenses).

Two sets of rules (``rules``):

- ``final`` (default), the final round's ``eval_infra/code/master.py``: only ``IMAGEID.png``
  outputs count; a defense that did not classify every adversarial image is left out of attack
  scoring, and an attack that did not produce every dataset image is left out of defense
  scoring. Attack score = misclassifications by the complete defenses; targeted score = target
  hits of the complete defenses; defense score = correct classifications of the complete
  attacks' images (both kinds). Raw counts, as master.py sums them; the published results
  divided them by images x opponents (``normalized_scores.csv`` here).
- ``dev``, the development tool ``run_attacks_and_defenses.py``: every attack and defense
  counts. One deliberate difference from it (which scored a non-targeted attack as dataset
  images x defenses - correct, so an image it never wrote counted as a win): as CONTRACT.md
  states, a missing adversarial image scores zero, so the attack score is produced images x
  defenses - correct; a missing classification counts as wrong.

Ties in a ranking are broken by name.
"""

from __future__ import annotations

import csv
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from ..contract.atomic import atomic_write, write_text_atomically
from .pieces import NOT_RUN, PieceRecord
from .plan import CLEAN_TRACK, DatasetImage
from .pool import Pool

MATRIX_FILES = {
    "accuracy_on_attacks": "accuracy_on_attacks.csv",
    "accuracy_on_targeted_attacks": "accuracy_on_targeted_attacks.csv",
    "hit_target_class": "hit_target_class.csv",
}
RANKING_FILES = {
    "defense": ("defense_ranking.csv", "DefenseName"),
    "attack": ("attack_ranking.csv", "AttackName"),
    "targeted_attack": ("targeted_attack_ranking.csv", "AttackName"),
}
ALL_CLASSIFICATION_FILE = "all_classification.csv"
ALL_CLASSIFICATION_COLUMNS = ["AttackName", "IsTargeted", "DefenseName", "ImageId", "PredictedLabel", "TrueLabel", "TargetClass"]
CLEAN_ACCURACY_FILE = "clean_accuracy.csv"
NORMALIZED_SCORES_FILE = "normalized_scores.csv"

RULES = ("final", "dev")
"""``final``: the final round's eval_infra/code/master.py; ``dev``: the development tool."""
FINAL_MATRIX_FILES = {"accuracy": "accuracy_matrix.csv", "errors": "error_matrix.csv", "hits": "hit_target_class_matrix.csv"}
"""master.py's matrices: rows = defenses, columns = attacks of both kinds."""
FINAL_RESULTS_FILES = {
    "attack": ("attack_results.csv", "sorted_attack_results.csv"),
    "targeted_attack": ("targeted_attack_results.csv", "sorted_target_attack_results.csv"),
    "defense": ("defense_results.csv", "sorted_defense_results.csv"),
}
FINAL_RESULTS_COLUMNS = [
    "SubmissionID", "ExternalSubmissionId", "Score", "CompletedBatches", "BatchesWithError", "ProcessedImages",
    "MinEvalTime", "MaxEvalTime", "MedianEvalTime", "MeanEvalTime", "ErrorMsg",
]
FINAL_SORTED_COLUMNS = ["SubmissionID", "ExternalTeamId", "Score", "MedianTime", "ImageCount"]
COUNT_ADV_IMAGES_FILE = "count_adv_images.csv"
CLASSIFIED_IMAGES_COUNT_FILE = "classified_images_count.csv"


@dataclass
class Scores:
    """Everything the output files and the report show."""

    images: int
    """Dataset images evaluated."""
    matrices: dict[str, pd.DataFrame]
    """MATRIX_FILES key -> counts, index = attack names, columns = defense names."""
    rankings: dict[str, pd.DataFrame]
    """``defense``/``attack``/``targeted_attack`` -> columns Name, Score, Images, Opponents, NormalizedScore, best first."""
    clean_accuracy: pd.DataFrame
    """Columns DefenseName, Correct, Images, Accuracy (clean images; not part of any score)."""
    produced: dict[tuple[str, str], int]
    """(track, attack) -> adversarial images it produced (after clipping)."""
    classifications: list[tuple[str, bool, str, str, int, int, int | None]]
    """Rows of all_classification.csv (adversarial images only)."""
    rules: str = "final"
    errors: pd.DataFrame | None = None
    """Misclassifications (a prediction other than TrueLabel), index = attacks of both kinds, columns = defenses."""
    all_hits: pd.DataFrame | None = None
    """Target hits of attacks of both kinds (master.py counts them for non-targeted attacks too)."""
    classified: dict[str, int] = field(default_factory=dict)
    """Defense -> adversarial images it classified (master.py's classified_images_count)."""
    complete_attacks: list[str] = field(default_factory=list)
    """Attacks (both kinds) that produced every dataset image: they score defenses (final rules)."""
    complete_defenses: list[str] = field(default_factory=list)
    """Defenses that classified every adversarial image: they score attacks (final rules)."""


def compute_scores(
    images: list[DatasetImage],
    pool: Pool,
    predictions: dict[str, dict[str, int]],
    *,
    attacks: list[str],
    targeted_attacks: list[str],
    defenses: list[str],
    rules: str = "final",
    not_png: frozenset[tuple[str, str, str]] = frozenset(),
) -> Scores:
    """Count correct classifications and target hits; ``predictions`` is defense -> pool name -> label.

    ``not_png`` holds (track, attack, image_id) of adversarial images the attack wrote as
    ``IMAGEID.jpg``: the development tool took them, the final round did not (``rules``).
    """
    if rules not in RULES:
        raise ValueError(f"unknown rules {rules!r}; expected one of {', '.join(RULES)}")
    attacks, targeted_attacks, defenses = sorted(attacks), sorted(targeted_attacks), sorted(defenses)
    by_id = {image.image_id: image for image in images}
    accuracy = pd.DataFrame(0, index=attacks, columns=defenses, dtype=np.int64)
    targeted_accuracy = pd.DataFrame(0, index=targeted_attacks, columns=defenses, dtype=np.int64)
    hits = pd.DataFrame(0, index=targeted_attacks, columns=defenses, dtype=np.int64)
    clean_correct = dict.fromkeys(defenses, 0)
    produced = {("attack", name): 0 for name in attacks} | {("targeted_attack", name): 0 for name in targeted_attacks}
    classifications = []
    errors = pd.DataFrame(0, index=attacks + targeted_attacks, columns=defenses, dtype=np.int64)
    all_hits = errors.copy()
    classified = dict.fromkeys(defenses, 0)
    for name, entry in sorted(pool.entries.items()):
        image = by_id.get(entry.image_id)
        if image is None:
            continue
        if entry.track != CLEAN_TRACK:
            if (entry.track, entry.attack) not in produced:
                continue
            if rules == "final" and (entry.track, entry.attack, entry.image_id) in not_png:
                continue
            produced[(entry.track, entry.attack)] += 1
        for defense in defenses:
            predicted = predictions.get(defense, {}).get(name)
            correct = predicted is not None and predicted == image.true_label
            if entry.track == CLEAN_TRACK:
                clean_correct[defense] += int(correct)
                continue
            if predicted is not None:
                classifications.append(
                    (entry.attack, entry.track == "targeted_attack", defense, entry.image_id, predicted, image.true_label, image.target_class)
                )
            if predicted is not None:
                classified[defense] += 1
                errors.loc[entry.attack, defense] += int(not correct)
                all_hits.loc[entry.attack, defense] += int(predicted == image.target_class)
            if entry.track == "attack":
                accuracy.loc[entry.attack, defense] += int(correct)
            else:
                targeted_accuracy.loc[entry.attack, defense] += int(correct)
                hits.loc[entry.attack, defense] += int(predicted is not None and predicted == image.target_class)

    count = len(images)
    complete_attacks = sorted(name for (_, name), made in produced.items() if made == count)
    total_adversarial = sum(produced.values())
    complete_defenses = [name for name in defenses if classified[name] == total_adversarial]
    if rules == "final":
        both = pd.concat([accuracy, targeted_accuracy])
        defense_scores = both.loc[[name for name in both.index if name in complete_attacks]].sum(axis=0).reindex(defenses, fill_value=0)
        attack_scores = errors.loc[attacks, complete_defenses].sum(axis=1).reindex(attacks, fill_value=0)
        target_scores = hits.loc[:, complete_defenses].sum(axis=1).reindex(targeted_attacks, fill_value=0)
        attack_opponents, defense_opponents = len(complete_defenses), len(complete_attacks)
    else:
        defense_scores = accuracy.sum(axis=0) + targeted_accuracy.sum(axis=0)
        attack_scores = pd.Series(
            {name: produced[("attack", name)] * len(defenses) - int(accuracy.loc[name].sum()) for name in attacks}, dtype=np.int64
        )
        target_scores = hits.sum(axis=1)
        attack_opponents, defense_opponents = len(defenses), len(attacks) + len(targeted_attacks)
    rankings = {
        "defense": _ranking(defense_scores, count, defense_opponents),
        "attack": _ranking(attack_scores, count, attack_opponents),
        "targeted_attack": _ranking(target_scores, count, attack_opponents),
    }
    clean = pd.DataFrame(
        {
            "DefenseName": defenses,
            "Correct": [clean_correct[name] for name in defenses],
            "Images": count,
            "Accuracy": [clean_correct[name] / count if count else float("nan") for name in defenses],
        }
    )
    return Scores(
        images=count,
        matrices={"accuracy_on_attacks": accuracy, "accuracy_on_targeted_attacks": targeted_accuracy, "hit_target_class": hits},
        rankings=rankings,
        clean_accuracy=clean,
        produced=produced,
        classifications=classifications,
        rules=rules,
        errors=errors,
        all_hits=all_hits,
        classified=classified,
        complete_attacks=complete_attacks,
        complete_defenses=complete_defenses,
    )


def _ranking(scores: pd.Series, images: int, opponents: int) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"Name": pd.Series([str(name) for name in scores.index], dtype=object), "Score": pd.Series([int(value) for value in scores.values], dtype=np.int64)}
    )
    frame["Images"] = images
    frame["Opponents"] = opponents
    denominator = images * opponents
    frame["NormalizedScore"] = frame["Score"] / denominator if denominator else float("nan")
    return frame.sort_values(["Score", "Name"], ascending=[False, True], kind="mergesort").reset_index(drop=True)


def _csv_file(path: Path) -> AbstractContextManager[IO]:
    """A CSV output written whole or not at all (csv.writer's \\r\\n line ends kept: no newline translation)."""
    return atomic_write(path, "w", durable=False, encoding="utf-8", newline="")


def write_matrix(path: Path, matrix: pd.DataFrame) -> None:
    """The organisers' matrix file: ``,DEF1,DEF2`` then ``ATTACK,COUNT,COUNT`` lines (np.savetxt layout)."""
    lines = [",".join(["", *map(str, matrix.columns)])]
    for name, row in matrix.iterrows():
        lines.append(",".join([str(name), *(str(int(value)) for value in row.values)]))
    write_text_atomically(Path(path), "\n".join(lines) + "\n")


def write_score_files(output_dir: Path, scores: Scores, *, save_all_classification: bool) -> list[Path]:
    """Write the organisers' files (and normalized_scores.csv, clean_accuracy.csv) into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, file_name in MATRIX_FILES.items():
        write_matrix(output_dir / file_name, scores.matrices[key])
        written.append(output_dir / file_name)
    for key, (file_name, name_column) in RANKING_FILES.items():
        # csv.writer as the organisers used it (so \r\n line ends).
        with _csv_file(output_dir / file_name) as stream:
            writer = csv.writer(stream)
            writer.writerow([name_column, "Score"])
            for row in scores.rankings[key].itertuples(index=False):
                writer.writerow([row.Name, row.Score])
        written.append(output_dir / file_name)
    normalized = pd.concat(
        [frame.assign(Track=key)[["Track", "Name", "Score", "Images", "Opponents", "NormalizedScore"]] for key, frame in scores.rankings.items()],
        ignore_index=True,
    )
    write_text_atomically(output_dir / NORMALIZED_SCORES_FILE, normalized.to_csv(index=False))
    write_text_atomically(output_dir / CLEAN_ACCURACY_FILE, scores.clean_accuracy.to_csv(index=False))
    written += [output_dir / NORMALIZED_SCORES_FILE, output_dir / CLEAN_ACCURACY_FILE]
    if save_all_classification:
        with _csv_file(output_dir / ALL_CLASSIFICATION_FILE) as stream:
            writer = csv.writer(stream)
            writer.writerow(ALL_CLASSIFICATION_COLUMNS)
            # Sorted (attack, targeted, defense, image): the file is the same however the pieces' runs interleaved.
            for row in sorted(scores.classifications, key=lambda row: row[:4]):
                writer.writerow(["" if value is None else value for value in row])
        written.append(output_dir / ALL_CLASSIFICATION_FILE)
    return written


def submission_statistics(records: list[PieceRecord]) -> dict[str, dict]:
    """Per submission, master.py's work statistics from the piece records (``run.finish``).

    ``completed``: pieces that ran; ``errors``: those whose entry point failed or could not
    start (a run killed at the time limit is not an error, as in the final round, which
    stopped the container and kept what it wrote); min/max/median/mean seconds over the
    pieces without error (NaN when none).
    """
    statistics: dict[str, dict] = {}
    for record in records:
        entry = statistics.setdefault(record.submission, {"kind": record.kind, "completed": 0, "errors": 0, "seconds": [], "error_message": ""})
        if record.status == NOT_RUN:
            continue
        entry["completed"] += 1
        if record.status in ("failed", "error"):
            entry["errors"] += 1
            entry["error_message"] = entry["error_message"] or record.outcome
        elif record.seconds is not None:
            entry["seconds"].append(float(record.seconds))
    for entry in statistics.values():
        times = entry["seconds"]
        entry.update(
            min=float(np.min(times)) if times else float("nan"),
            max=float(np.max(times)) if times else float("nan"),
            median=float(np.median(times)) if times else float("nan"),
            mean=float(np.mean(times)) if times else float("nan"),
        )
    return statistics


def write_final_round_files(output_dir: Path, scores: Scores, records: list[PieceRecord]) -> list[Path]:
    """master.py's result files: the defense-by-attack matrices, per-submission results and counts.

    Matrices (rows = defenses, columns = attacks of both kinds, ``\\n`` line ends as
    ResultMatrix.save_to_file writes them); ``*_results.csv`` with completed batches, batches
    with errors, processed images and min/max/median/mean seconds; ``sorted_*_results.csv``
    best first; ``count_adv_images.csv`` and ``classified_images_count.csv``. Submissions have
    no numeric ids here, so SubmissionID and the external id are both the name.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    accuracy = pd.concat([scores.matrices["accuracy_on_attacks"], scores.matrices["accuracy_on_targeted_attacks"]])
    hits = scores.all_hits if scores.all_hits is not None else accuracy * 0
    errors = scores.errors if scores.errors is not None else accuracy * 0
    for key, matrix in (("accuracy", accuracy), ("errors", errors), ("hits", hits)):
        ordered = matrix.sort_index()
        write_matrix(output_dir / FINAL_MATRIX_FILES[key], ordered.T)
        written.append(output_dir / FINAL_MATRIX_FILES[key])
    statistics = submission_statistics(records)
    processed = {name: made for (_, name), made in scores.produced.items()} | dict(scores.classified)
    for key, (results_file, sorted_file) in FINAL_RESULTS_FILES.items():
        ranking = scores.rankings[key]
        score_of = dict(zip(ranking["Name"], ranking["Score"]))
        empty = {"completed": 0, "errors": 0, "min": float("nan"), "max": float("nan"), "median": float("nan"), "mean": float("nan"), "error_message": ""}
        with _csv_file(output_dir / results_file) as stream:
            writer = csv.writer(stream)
            writer.writerow(FINAL_RESULTS_COLUMNS)
            for name in sorted(score_of):
                stat = statistics.get(name, empty)
                writer.writerow([
                    name, name, int(score_of[name]), stat["completed"], stat["errors"], processed.get(name, 0),
                    stat["min"], stat["max"], stat["median"], stat["mean"], stat["error_message"],
                ])
        with _csv_file(output_dir / sorted_file) as stream:
            writer = csv.writer(stream)
            writer.writerow(FINAL_SORTED_COLUMNS)
            for row in ranking.itertuples(index=False):
                writer.writerow([row.Name, row.Name, int(row.Score), statistics.get(row.Name, empty)["median"], processed.get(row.Name, 0)])
        written += [output_dir / results_file, output_dir / sorted_file]
    with _csv_file(output_dir / COUNT_ADV_IMAGES_FILE) as stream:
        csv.writer(stream).writerows([name, made] for (_, name), made in sorted(scores.produced.items(), key=lambda item: item[0][1]))
    with _csv_file(output_dir / CLASSIFIED_IMAGES_COUNT_FILE) as stream:
        csv.writer(stream).writerows([name, count] for name, count in sorted(scores.classified.items()))
    return written + [output_dir / COUNT_ADV_IMAGES_FILE, output_dir / CLASSIFIED_IMAGES_COUNT_FILE]
