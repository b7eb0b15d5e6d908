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

One deliberate difference from ``run_attacks_and_defenses.py`` (which scored a non-targeted
attack as dataset images x defenses - correct, so an image it never wrote counted as a win):
as CONTRACT.md states, a missing adversarial image scores zero, so the attack score is
produced images x defenses - correct. A missing classification counts as wrong (no point for
the defense; a point for a non-targeted attack). Ties in a ranking are broken by name.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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


def compute_scores(
    images: list[DatasetImage],
    pool: Pool,
    predictions: dict[str, dict[str, int]],
    *,
    attacks: list[str],
    targeted_attacks: list[str],
    defenses: list[str],
) -> Scores:
    """Count correct classifications and target hits; ``predictions`` is defense -> pool name -> label."""
    attacks, targeted_attacks, defenses = sorted(attacks), sorted(targeted_attacks), sorted(defenses)
    by_id = {image.image_id: image for image in images}
    accuracy = pd.DataFrame(0, index=attacks, columns=defenses, dtype=np.int64)
    targeted_accuracy = pd.DataFrame(0, index=targeted_attacks, columns=defenses, dtype=np.int64)
    hits = pd.DataFrame(0, index=targeted_attacks, columns=defenses, dtype=np.int64)
    clean_correct = dict.fromkeys(defenses, 0)
    produced = {("attack", name): 0 for name in attacks} | {("targeted_attack", name): 0 for name in targeted_attacks}
    classifications = []
    for name, entry in sorted(pool.entries.items()):
        image = by_id.get(entry.image_id)
        if image is None:
            continue
        if entry.track != CLEAN_TRACK:
            if (entry.track, entry.attack) not in produced:
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
            if entry.track == "attack":
                accuracy.loc[entry.attack, defense] += int(correct)
            else:
                targeted_accuracy.loc[entry.attack, defense] += int(correct)
                hits.loc[entry.attack, defense] += int(predicted is not None and predicted == image.target_class)

    count = len(images)
    defense_scores = accuracy.sum(axis=0) + targeted_accuracy.sum(axis=0)
    attack_scores = pd.Series(
        {name: produced[("attack", name)] * len(defenses) - int(accuracy.loc[name].sum()) for name in attacks}, dtype=np.int64
    )
    rankings = {
        "defense": _ranking(defense_scores, count, len(attacks) + len(targeted_attacks)),
        "attack": _ranking(attack_scores, count, len(defenses)),
        "targeted_attack": _ranking(hits.sum(axis=1), count, len(defenses)),
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


def write_matrix(path: Path, matrix: pd.DataFrame) -> None:
    """The organisers' matrix file: ``,DEF1,DEF2`` then ``ATTACK,COUNT,COUNT`` lines (np.savetxt layout)."""
    lines = [",".join(["", *map(str, matrix.columns)])]
    for name, row in matrix.iterrows():
        lines.append(",".join([str(name), *(str(int(value)) for value in row.values)]))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


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
        with open(output_dir / file_name, "w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow([name_column, "Score"])
            for row in scores.rankings[key].itertuples(index=False):
                writer.writerow([row.Name, row.Score])
        written.append(output_dir / file_name)
    normalized = pd.concat(
        [frame.assign(Track=key)[["Track", "Name", "Score", "Images", "Opponents", "NormalizedScore"]] for key, frame in scores.rankings.items()],
        ignore_index=True,
    )
    normalized.to_csv(output_dir / NORMALIZED_SCORES_FILE, index=False)
    scores.clean_accuracy.to_csv(output_dir / CLEAN_ACCURACY_FILE, index=False)
    written += [output_dir / NORMALIZED_SCORES_FILE, output_dir / CLEAN_ACCURACY_FILE]
    if save_all_classification:
        with open(output_dir / ALL_CLASSIFICATION_FILE, "w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(ALL_CLASSIFICATION_COLUMNS)
            for row in scores.classifications:
                writer.writerow(["" if value is None else value for value in row])
        written.append(output_dir / ALL_CLASSIFICATION_FILE)
    return written
