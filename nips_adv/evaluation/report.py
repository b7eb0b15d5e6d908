"""report.html (heatmaps, rankings, a gallery per attack) and results.json, from the scores.

Files: ``OUTPUT_DIR/report.html``, ``OUTPUT_DIR/results.json`` and ``OUTPUT_DIR/report_files/``
(heatmap PNGs and gallery images). The HTML holds the matrices as tables too, so it reads
without the images and can be checked in a browser's DOM.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from ..contract.atomic import atomic_path, write_text_atomically
from ..contract.constants import ATTACK_TYPES
from ..contract.images import ImageReadError, read_png, write_png
from ..contract.labels import class_name
from .layout import EvaluationLayout, clipped_image
from .matrices import MATRIX_FILES, Scores
from .pieces import NOT_RUN, PieceRecord
from .plan import CLEAN_TRACK, Evaluation
from .pool import Pool

REPORT_FILE = "report.html"
RESULTS_FILE = "results.json"
REPORT_FILES_DIR = "report_files"
GALLERY_EXAMPLES = 3
MATRIX_TITLES = {
    "accuracy_on_attacks": "Accuracy on non-targeted attacks (correct classifications)",
    "accuracy_on_targeted_attacks": "Accuracy on targeted attacks (correct classifications)",
    "hit_target_class": "Target class hits (targeted attacks)",
}
RANKING_TITLES = {"defense": "Defenses", "attack": "Non-targeted attacks", "targeted_attack": "Targeted attacks"}


def class_label_text(label: int | None) -> str:
    """``"281 tabby, tabby cat"``; ``"-"`` when there is no classification."""
    if label is None:
        return "-"
    try:
        return f"{label} {class_name(label)}"
    except (ValueError, RuntimeError, OSError):
        return str(label)


def write_report(
    output_dir: Path,
    *,
    evaluation: Evaluation,
    layout: EvaluationLayout,
    scores: Scores,
    pool: Pool | None,
    predictions: dict[str, dict[str, int]],
    records: list[PieceRecord],
    problems: list[str],
) -> list[Path]:
    """Write results.json, report.html and report_files/ into ``output_dir``; return their paths.

    ``predictions`` is defense -> pool name -> label; ``records`` every piece's record (not-run
    ones included), as the run holds them.
    """
    output_dir = Path(output_dir)
    files_dir = output_dir / REPORT_FILES_DIR
    files_dir.mkdir(parents=True, exist_ok=True)
    heatmaps = {key: _heatmap(scores.matrices[key], files_dir / f"{key}.png") for key in MATRIX_FILES}
    gallery = _gallery(evaluation, layout, records, pool, predictions, files_dir)
    pieces = [record.summary() for record in records]
    results = _results(scores, evaluation, pieces, problems)
    write_text_atomically(output_dir / RESULTS_FILE, json.dumps(results, indent=1))

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("nips_adv.evaluation", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    html = environment.get_template("report.html.j2").render(
        results=results,
        matrices=[
            {"key": key, "title": MATRIX_TITLES[key], "frame": scores.matrices[key], "heatmap": heatmaps[key]}
            for key in MATRIX_FILES
        ],
        rankings=[{"title": RANKING_TITLES[key], "frame": frame} for key, frame in scores.rankings.items()],
        clean=scores.clean_accuracy,
        gallery=gallery,
        problems=problems,
        pieces=pieces,
        files_dir=REPORT_FILES_DIR,
    )
    write_text_atomically(output_dir / REPORT_FILE, html)
    written = [output_dir / RESULTS_FILE, output_dir / REPORT_FILE, *(files_dir / name for name in heatmaps.values() if name)]
    return written


def _heatmap(matrix: pd.DataFrame, path: Path) -> str | None:
    """A PNG heatmap of ``matrix``; its file name, or None when the matrix is empty."""
    if matrix.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = matrix.shape
    figure, axes = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * columns), max(2.5, 1.0 + 0.5 * rows)), dpi=100)
    image = axes.imshow(matrix.values, cmap="viridis", aspect="auto")
    axes.set_xticks(range(columns), labels=[str(name) for name in matrix.columns], rotation=45, ha="right")
    axes.set_yticks(range(rows), labels=[str(name) for name in matrix.index])
    axes.set_xlabel("defense")
    axes.set_ylabel("attack")
    axes.set_title(path.stem, fontsize=10)
    peak = matrix.values.max(initial=0)
    if rows * columns <= 400:
        for row in range(rows):
            for column in range(columns):
                value = int(matrix.values[row, column])
                axes.text(column, row, str(value), ha="center", va="center", color="black" if value > peak / 2 else "white", fontsize=8)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    with atomic_path(path, durable=False) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return path.name


def _gallery(
    evaluation: Evaluation,
    layout: EvaluationLayout,
    records: list[PieceRecord],
    pool: Pool | None,
    predictions: dict[str, dict[str, int]],
    files_dir: Path,
) -> list[dict]:
    """Per attack: a few examples with clean, adversarial and amplified perturbation images and each defense's prediction."""
    name_of = pool.name_of() if pool is not None else {}
    images = {image.image_id: image for image in evaluation.images}
    defenses = sorted(predictions)
    sections = []
    for kind in ATTACK_TYPES:
        for attack in evaluation.names(kind):
            examples: list[dict] = []
            ran = sorted((record for record in records if (record.kind, record.submission) == (kind, attack) and record.status != NOT_RUN), key=lambda record: record.batch)
            shown = ((record, images[image_id]) for record in ran for image_id in record.written if image_id in images)
            for record, image in shown:
                if len(examples) >= GALLERY_EXAMPLES:
                    break
                try:
                    clean = read_png(Path(image.path))
                    adversarial = read_png(clipped_image(layout.piece_dir(kind, attack, record.batch), image.image_id))
                except ImageReadError:
                    continue
                epsilon = record.epsilon or 0
                stem = f"{kind}-{attack}-{image.image_id}"
                write_png(clean, files_dir / f"{stem}-clean.png")
                write_png(adversarial, files_dir / f"{stem}-adversarial.png")
                write_png(_amplified(adversarial, clean, epsilon), files_dir / f"{stem}-perturbation.png")
                pool_name = name_of.get((kind, attack, image.image_id))
                clean_name = name_of.get((CLEAN_TRACK, CLEAN_TRACK, image.image_id))
                examples.append(
                    {
                        "image_id": image.image_id,
                        "epsilon": epsilon,
                        "true": class_label_text(image.true_label),
                        "target": class_label_text(image.target_class) if kind == "targeted_attack" else None,
                        "files": {part: f"{stem}-{part}.png" for part in ("clean", "adversarial", "perturbation")},
                        "predictions": [
                            {
                                "defense": defense,
                                "clean": class_label_text(predictions[defense].get(clean_name) if clean_name else None),
                                "adversarial": class_label_text(predictions[defense].get(pool_name) if pool_name else None),
                                "correct": pool_name is not None and predictions[defense].get(pool_name) == image.true_label,
                            }
                            for defense in defenses
                        ],
                    }
                )
            sections.append({"kind": kind, "attack": attack, "examples": examples})
    return sections


def _amplified(adversarial: np.ndarray, clean: np.ndarray, epsilon: int) -> np.ndarray:
    """The perturbation scaled so that +-epsilon spans 0..255 (grey = unchanged)."""
    difference = adversarial.astype(np.float32) - clean.astype(np.float32)
    scale = 127.5 / max(1, epsilon)
    return np.clip(np.rint(127.5 + difference * scale), 0, 255).astype(np.uint8)


def _frame_records(frame: pd.DataFrame) -> list[dict]:
    return [{key: _plain(value) for key, value in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _results(scores: Scores, evaluation: Evaluation, pieces: list[dict], problems: list[str]) -> dict:
    status_counts: dict[str, int] = {}
    for piece in pieces:
        status_counts[piece["status"]] = status_counts.get(piece["status"], 0) + 1
    return {
        "images": scores.images,
        "epsilon": evaluation.epsilon,
        "settings": asdict(evaluation.settings),
        "submissions": {kind: evaluation.names(kind) for kind in evaluation.submissions},
        "matrices": {
            key: {"attacks": [str(name) for name in frame.index], "defenses": [str(name) for name in frame.columns], "values": frame.values.astype(int).tolist()}
            for key, frame in scores.matrices.items()
        },
        "rankings": {key: _frame_records(frame) for key, frame in scores.rankings.items()},
        "clean_accuracy": _frame_records(scores.clean_accuracy),
        "produced_images": [{"track": track, "attack": attack, "images": count} for (track, attack), count in sorted(scores.produced.items())],
        "pieces": {"counts": status_counts, "list": pieces},
        "problems": problems,
        "warnings": evaluation.warnings,
        "rules": scores.rules,
        "complete_attacks": scores.complete_attacks,
        "complete_defenses": scores.complete_defenses,
    }
