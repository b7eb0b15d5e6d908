"""Scoring classifications against the official dataset CSV: accuracy on TrueLabel, hits on TargetClass.

A folder of images (clean or adversarial) is classified with a model, or a defense's
``result.csv`` is read as it is; each image is matched to its dataset row by ``ImageId``
(the file name without ``.png``). As in the organisers' tools, a non-targeted attack is
measured by the accuracy it leaves, a targeted one by how often the prediction is the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract.constants import DEFAULT_BATCH_SIZE
from ..contract.csv_files import DatasetLabels, read_dataset_labels, read_label_file
from ..contract.images import image_id_of
from ..contract.proportions import wilson_interval
from ..jobs.folder_job import JobReport

if TYPE_CHECKING:
    from ..models.classifier import Classifier


@dataclass(frozen=True)
class ImageScore:
    """One classified image and its dataset row: labels 1..1000."""

    image: str
    """File name as found (``IMAGEID.png``)."""
    predicted: int
    true_label: int
    target_class: int

    @property
    def correct(self) -> bool:
        return self.predicted == self.true_label

    @property
    def hit_target(self) -> bool:
        return self.predicted == self.target_class


@dataclass
class ScoreReport:
    """Accuracy and target hit rate over the images that are both classified and in the dataset.

    Images the dataset does not describe, and dataset rows with no classified image, are not
    scored; they are listed by name so that a partial folder is never mistaken for a full one.
    """

    scores: list[ImageScore] = field(default_factory=list)
    images_not_in_dataset: list[str] = field(default_factory=list)
    """File names classified but absent from the dataset CSV."""
    rows_without_image: list[str] = field(default_factory=list)
    """ImageIds of the dataset with no classified image (normal when the folder is a subset)."""
    failures: list[str] = field(default_factory=list)
    """Images that could not be read, bad dataset rows and bad prediction rows, one line each."""

    @property
    def images_scored(self) -> int:
        return len(self.scores)

    @property
    def correct(self) -> int:
        return sum(score.correct for score in self.scores)

    @property
    def target_hits(self) -> int:
        return sum(score.hit_target for score in self.scores)

    @property
    def accuracy(self) -> float | None:
        """Fraction of scored images classified as their TrueLabel; None when nothing was scored."""
        return self.correct / self.images_scored if self.scores else None

    @property
    def target_hit_rate(self) -> float | None:
        """Fraction of scored images classified as their TargetClass; None when nothing was scored."""
        return self.target_hits / self.images_scored if self.scores else None

    @property
    def ok(self) -> bool:
        """No failures and no image left unscored for want of a dataset row."""
        return not self.failures and not self.images_not_in_dataset

    def predictions(self) -> dict[str, int]:
        """File name -> predicted label, for the scored images."""
        return {score.image: score.predicted for score in self.scores}

    def to_dict(self) -> dict:
        """A JSON-ready summary with every per-image prediction."""
        return {
            "images_scored": self.images_scored,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "target_hits": self.target_hits,
            "target_hit_rate": self.target_hit_rate,
            "images_not_in_dataset": list(self.images_not_in_dataset),
            "rows_without_image": list(self.rows_without_image),
            "failures": list(self.failures),
            "predictions": [
                {
                    "image": score.image,
                    "predicted": score.predicted,
                    "true_label": score.true_label,
                    "target_class": score.target_class,
                }
                for score in self.scores
            ],
        }


def score_predictions(
    predictions: Mapping[str, int] | Iterable[tuple[str, int]],
    dataset: DatasetLabels,
    *,
    failures: Iterable[str] = (),
) -> ScoreReport:
    """Score ``file name -> label`` predictions against the dataset's labels (in file-name order)."""
    pairs = predictions.items() if isinstance(predictions, Mapping) else predictions
    report = ScoreReport(failures=[*dataset.problems, *failures])
    seen: set[str] = set()
    for name, label in sorted(pairs):
        image_id = image_id_of(name)
        if image_id not in dataset.true_labels:
            report.images_not_in_dataset.append(name)
            continue
        seen.add(image_id)
        report.scores.append(
            ImageScore(name, int(label), dataset.true_labels[image_id], dataset.target_classes[image_id])
        )
    report.rows_without_image = [image_id for image_id in dataset.true_labels if image_id not in seen]
    return report


def score_directory(
    images_dir: Path,
    dataset_csv: Path,
    *,
    model: "Classifier",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> ScoreReport:
    """Classify every PNG of ``images_dir`` with ``model`` and score it against ``dataset_csv``.

    Unreadable images are named in ``failures`` and not scored. Raises ContractFileError when
    the dataset CSV cannot be used.
    """
    from ..defenses.directory import predict_directory

    dataset = read_dataset_labels(dataset_csv)
    job = JobReport()
    predictions: list[tuple[str, int]] = []
    # defenses.directory.PredictingModel declares predict(pixels, **options); Classifier.predict takes no options.
    batches = predict_directory(images_dir, model=model, report=job, batch_size=batch_size, progress=progress)  # type: ignore[arg-type]
    for rows in batches:
        predictions.extend(rows)
    return score_predictions(predictions, dataset, failures=job.failures)


def score_prediction_file(predictions_file: Path, dataset_csv: Path) -> ScoreReport:
    """Score a defense's ``FILENAME,LABEL`` file (e.g. ``result.csv``) against ``dataset_csv``.

    Rows that do not parse are named in ``failures`` (the organisers ignore them, so those
    images count as unclassified). Raises ContractFileError when either file cannot be used.
    """
    dataset = read_dataset_labels(dataset_csv)
    label_file = read_label_file(predictions_file)
    return score_predictions(label_file.labels, dataset, failures=label_file.problems)


__all__ = [
    "DatasetLabels",
    "ImageScore",
    "ScoreReport",
    "read_dataset_labels",
    "score_directory",
    "score_prediction_file",
    "score_predictions",
    "wilson_interval",
]
