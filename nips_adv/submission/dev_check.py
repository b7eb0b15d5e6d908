"""The dev-set smoke test of ``nips-adv validate --images DIR --dataset CSV``: real images, their labels, a score bar.

What competitors run in CI: the submission runs on real dev images (their ``TrueLabel`` and, for
targeted attacks, ``TargetClass`` from the official dataset CSV), and its score is held to a bar:

- attacks: the accuracy a chosen model (``--model``, an ensemble allowed) keeps on the outputs,
  after the organisers' clipping to the eps box, at most ``--max-accuracy``;
- targeted attacks: also the share of outputs that model classifies as the target, at least ``--min-hit-rate``;
- defenses: the share of the images the submission classifies right, at least ``--min-accuracy``
  (an unclassified image counts as wrong, as the organisers count it).

Every figure is printed with its image count and 95% Wilson interval (Wilson 1927).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contract.constants import IMAGE_SIZE
from ..contract.csv_files import DatasetLabels, read_dataset_labels
from ..contract.epsilon import epsilon_box
from ..contract.images import ImageReadError, image_id_of, list_png_files, read_png
from ..contract.proportions import wilson_interval

THRESHOLDS = {
    # option: (metric, bound, tracks it applies to)
    "max_accuracy": ("accuracy", "max", ("attack", "targeted_attack")),
    "min_hit_rate": ("hit rate", "min", ("targeted_attack",)),
    "min_accuracy": ("accuracy", "min", ("defense",)),
}
"""The score bars ``validate`` takes, by option name (``--max-accuracy`` ...)."""

SCORING_BATCH = 16


class DevSetError(Exception):
    """The dev images or dataset CSV cannot be used (not the submission's fault); the message is one line."""


@dataclass(frozen=True)
class Threshold:
    """One score bar: ``option`` (``max_accuracy``, ``min_hit_rate``, ``min_accuracy``) and its value in 0..1."""

    option: str
    value: float

    @property
    def metric(self) -> str:
        return THRESHOLDS[self.option][0]

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")

    def met_by(self, figure: float) -> bool:
        return figure <= self.value if THRESHOLDS[self.option][1] == "max" else figure >= self.value


@dataclass(frozen=True)
class DevSet:
    """Real images (name -> ``(299, 299, 3)`` uint8) and their dataset labels."""

    images: dict[str, np.ndarray]
    labels: DatasetLabels

    def target_classes(self) -> dict[str, int]:
        """``IMAGEID.png`` -> TargetClass, for ``target_class.csv``."""
        return {name: self.labels.target_classes[image_id_of(name)] for name in self.images}


def threshold_problem(submission_type: str, thresholds: Sequence[Threshold]) -> str | None:
    """A one-line reason when a bar does not apply to ``submission_type`` or is outside 0..1; None when all fit."""
    for threshold in thresholds:
        tracks = THRESHOLDS[threshold.option][2]
        if submission_type not in tracks:
            return f"{threshold.flag} applies to {' and '.join(tracks)} submissions, not to {submission_type}"
        if not 0 <= threshold.value <= 1:
            return f"{threshold.flag} {threshold.value:g} is not a fraction in 0..1"
    return None


def load_dev_set(images_dir: Path, dataset_csv: Path, limit: int | None = None) -> DevSet:
    """The first ``limit`` (None: all) PNGs of ``images_dir``, by name, that have a row in ``dataset_csv``.

    Raises DevSetError (one line naming the file) when the CSV cannot be read, no image has a row,
    or an image is unreadable or not 299x299 RGB (the contract's inputs).
    """
    from ..contract.csv_files import ContractFileError

    try:
        labels = read_dataset_labels(Path(dataset_csv))
    except ContractFileError as error:
        raise DevSetError(str(error)) from None
    paths = [path for path in list_png_files(Path(images_dir)) if image_id_of(path.name) in labels.true_labels]
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise DevSetError(f"no PNG in {images_dir} has a row in {dataset_csv} (IMAGEID.png <-> ImageId)")
    images = {}
    for path in paths:
        try:
            pixels = read_png(path)
        except ImageReadError as error:
            raise DevSetError(str(error)) from None
        if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise DevSetError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]}, not the contract's {IMAGE_SIZE}x{IMAGE_SIZE}")
        images[path.name] = pixels
    return DevSet(images, labels)


def classify_outputs(
    classifier, clean: Mapping[str, np.ndarray], output_dir: Path, epsilon: float
) -> dict[str, int]:
    """``classifier``'s label (1..1000) of each readable 299x299 output, clipped to the eps box of its clean image
    first, as the organisers clip before scoring. Outputs that are missing or unreadable are left out."""
    names, batch, predictions = [], [], {}
    for name, pixels in clean.items():
        try:
            adversarial = read_png(output_dir / name)
        except (ImageReadError, OSError):
            continue
        if adversarial.shape != pixels.shape:
            continue
        lower, upper = epsilon_box(pixels, epsilon)
        names.append(name)
        batch.append(np.clip(adversarial, lower, upper))
        if len(batch) == SCORING_BATCH:
            predictions.update(zip(names, classifier.predict(np.stack(batch)).tolist()))
            names, batch = [], []
    if batch:
        predictions.update(zip(names, classifier.predict(np.stack(batch)).tolist()))
    return predictions


@dataclass(frozen=True)
class Figure:
    """A proportion measured on the dev images: ``successes`` of ``count``."""

    what: str
    successes: int
    count: int

    @property
    def value(self) -> float:
        return self.successes / self.count if self.count else float("nan")

    def text(self) -> str:
        if not self.count:
            return f"{self.what}: no image could be scored"
        low, high = wilson_interval(self.successes, self.count)
        return f"{self.what}: {self.value:.3f} ({self.successes} of {self.count} images, 95% Wilson interval {low:.3f}-{high:.3f})"


def attack_figures(predictions: Mapping[str, int], dev_set: DevSet, model: str) -> dict[str, Figure]:
    """Accuracy (prediction == TrueLabel) and target hit rate (== TargetClass) of ``model`` over the classified outputs."""
    ids = {name: image_id_of(name) for name in predictions}
    correct = sum(label == dev_set.labels.true_labels[ids[name]] for name, label in predictions.items())
    hits = sum(label == dev_set.labels.target_classes[ids[name]] for name, label in predictions.items())
    return {
        "accuracy": Figure(f"accuracy of {model} on the outputs", correct, len(predictions)),
        "hit rate": Figure(f"target hit rate of {model} on the outputs", hits, len(predictions)),
    }


def defense_figures(labels: Mapping[str, int], dev_set: DevSet) -> dict[str, Figure]:
    """The defense's accuracy over every dev image given to it (an unclassified image counts as wrong)."""
    correct = sum(labels.get(name) == dev_set.labels.true_labels[image_id_of(name)] for name in dev_set.images)
    return {"accuracy": Figure("accuracy of the defense", correct, len(dev_set.images))}
