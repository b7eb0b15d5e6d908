"""An attack over a whole INPUT_DIR, as the contract runs it: read, attack, write, batch by batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..contract.csv_files import read_target_classes
from ..contract.folder_job import JobReport, input_batches
from ..contract.images import write_png
from ..labels import class_name
from ..models.classifier import Classifier
from .sign_gradient import SignGradientConfig, sign_gradient_attack
from .time_budget import TimeBudget


logger = logging.getLogger("nips_adv")


class OutputDirError(ValueError):
    """An OUTPUT_DIR the tools must not write into."""


def check_output_dir(input_dir: Path, output_dir: Path) -> None:
    """Refuse an OUTPUT_DIR that is INPUT_DIR itself: writing there would overwrite the clean images."""
    if output_dir.exists() and input_dir.resolve() == output_dir.resolve():
        raise OutputDirError(f"OUTPUT_DIR {output_dir} is INPUT_DIR: it would overwrite the clean images")
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(f"OUTPUT_DIR {output_dir} exists and is not a folder")


def attack_directory(
    input_dir: Path,
    output_dir: Path,
    eps: float,
    *,
    model: Classifier,
    config: SignGradientConfig,
    targeted: bool = False,
    batch_size: int = 16,
    progress: bool = True,
    time_budget: TimeBudget | None = None,
    true_labels: Mapping[str, int] | None = None,
) -> JobReport:
    """Write one adversarial PNG per input PNG (same name and size) into ``output_dir``.

    Non-targeted attacks move away from the model's own top classes (``config.own_classes``;
    the contract gives no true label). Targeted attacks read ``INPUT_DIR/target_class.csv`` (ContractFileError when it is
    missing); an image absent from it is attacked toward its least-likely class, with a warning.
    With a ``time_budget``, batches after the first run fewer iterations when the configured
    number would not finish by its deadline (a warning says so).

    ``true_labels`` (file name -> label 1..1000), for studies outside the contract: a non-targeted
    attack moves away from these instead, as attack libraries are usually benchmarked; an image
    absent from them moves away from the model's prediction, with a warning. The tools never pass it.
    """
    if targeted and true_labels is not None:
        raise ValueError("true_labels are for non-targeted attacks: a targeted one reads target_class.csv")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_output_dir(input_dir, output_dir)
    report = JobReport()
    targets: dict[str, int] = {}
    if targeted:
        target_file = read_target_classes(input_dir)
        for problem in target_file.problems:
            report.warn(f"{problem}; row skipped")
        targets = target_file.labels
    clock = time_budget.clock if time_budget is not None else time.monotonic
    batch_started = clock()
    previous_iterations = config.iterations
    for batch in input_batches(input_dir, batch_size, report, progress=progress):
        output_dir.mkdir(parents=True, exist_ok=True)
        batch_config = config
        if time_budget is not None:
            images_left = report.images_found - report.images_done - len(report.failures)
            iterations = time_budget.iterations_for(config.iterations, images_left)
            if iterations != config.iterations:
                batch_config = replace(config, iterations=iterations)
            if iterations != previous_iterations:
                share = "all" if iterations == config.iterations else f"{iterations} of the"
                report.warn(
                    f"time budget: from {batch.names[0]} on, {share} {config.iterations} iterations "
                    f"({time_budget.seconds_per_image_iteration:.2f} s per image-iteration measured; "
                    f"{images_left} images and {time_budget.seconds_left():.0f} s left)"
                )
                previous_iterations = iterations
        if targeted:
            labels = _known_labels(batch.names, targets, model, batch.pixels, report, targeted=True)
            for name, label in zip(batch.names, labels):
                logger.debug("%s: toward %d (%s)", name, label, class_name(label))
        elif true_labels is not None:
            labels = _known_labels(batch.names, true_labels, model, batch.pixels, report, targeted=False)
        else:
            labels = None  # the model's own top classes on the clean batch
        attack_started = clock()
        adversarial = sign_gradient_attack(model, batch.pixels, eps, labels=labels, targeted=targeted, config=batch_config)
        attack_seconds = clock() - attack_started
        for name, pixels in zip(batch.names, adversarial):
            write_png(pixels, output_dir / name)
        if time_budget is not None:
            batch_ended = clock()
            time_budget.record(
                images=len(batch.names),
                iterations=batch_config.iterations,
                attack_seconds=attack_seconds,
                other_seconds=batch_ended - batch_started - attack_seconds,
            )
            batch_started = batch_ended
    return report


def _known_labels(
    names: tuple[str, ...], known: Mapping[str, int], model: Classifier, pixels: np.ndarray, report: JobReport,
    *, targeted: bool,
) -> np.ndarray:
    """The labels of ``names`` in ``known``; for the others, the model's least-likely class (a target)
    or its prediction (a class to leave), with a warning each."""
    missing = [index for index, name in enumerate(names) if name not in known]
    labels = np.array([known.get(name, 0) for name in names], dtype=np.int64)
    if missing:
        logits = model.logits(pixels[missing])
        fallback = (np.argmin(logits, axis=1) if targeted else np.argmax(logits, axis=1)) + 1
        for index, label in zip(missing, fallback):
            if targeted:
                report.warn(f"{names[index]}: not in target_class.csv; attacking toward its least-likely class {label}")
            else:
                report.warn(f"{names[index]}: no true label given; attacking away from its predicted class {label}")
            labels[index] = label
    return labels
