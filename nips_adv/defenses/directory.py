"""The defense over a whole INPUT_DIR: one ``FILENAME,LABEL`` line per readable PNG.

A randomised recipe averages several random passes per image; with a time budget, batches after
the first average fewer of them when the speed measured so far says the configured number would
not finish in time (the attacks' ``TimeBudget``, with passes in place of iterations).
"""

from __future__ import annotations

import errno
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..contract.atomic import write_text_atomically
from ..contract.constants import TARGET_CLASS_FILE
from ..contract.csv_files import write_label_rows
from ..contract.labels import class_name
from ..jobs.folder_job import JobReport, input_batches
from ..jobs.time_budget import TimeBudget

logger = logging.getLogger("nips_adv")


class PredictingModel(Protocol):
    """A ``Classifier`` (no passes) or a ``DefendedClassifier`` (``passes``: random passes to average)."""

    def predict(self, pixels: np.ndarray, **options: Any) -> np.ndarray: ...


def predict_directory(
    input_dir: Path,
    *,
    model: PredictingModel,
    report: JobReport,
    batch_size: int = 16,
    progress: bool = True,
    time_budget: TimeBudget | None = None,
) -> Iterator[list[tuple[str, int]]]:
    """``(file name, label 1..1000)`` pairs for the PNGs of ``input_dir``, one list per batch.

    Unreadable images are recorded in ``report`` and skipped; ``report.images_done`` counts the
    images of the batches the caller has consumed. ``time_budget`` applies to a model with ``passes``.
    """
    configured = getattr(model, "passes", None)
    passes = configured
    clock = time_budget.clock if time_budget is not None else time.monotonic
    stop = None if time_budget is None else (lambda: clock() >= time_budget.deadline)
    undefended = getattr(model, "classifier", None)
    late = 0
    for batch in input_batches(Path(input_dir), batch_size, report, progress=progress):
        started = clock()
        if time_budget is not None and time_budget.seconds_left() <= 0 and undefended is not None:
            # Past the deadline every image still gets a row, from the cheapest pass there is: the network alone.
            labels = undefended.predict(batch.pixels)
            late += len(batch.names)
        elif configured is None:
            labels = model.predict(batch.pixels)
        else:
            if time_budget is not None:
                images_left = report.images_found - report.images_done - len(report.failures)
                chosen = time_budget.iterations_for(configured, images_left)
                if chosen != passes:
                    report.warn(
                        f"time budget: from {batch.names[0]} on, {chosen} of the {configured} random passes "
                        f"({time_budget.seconds_per_image_iteration:.2f} s per image-pass measured; "
                        f"{images_left} images and {max(0.0, time_budget.seconds_left()):.0f} s left)"
                    )
                    passes = chosen
            labels = model.predict(batch.pixels, passes=passes, stop=stop)
            if time_budget is not None:
                time_budget.record(images=len(batch.names), iterations=passes, attack_seconds=clock() - started, other_seconds=0.0)
        rows = list(zip(batch.names, [int(label) for label in labels]))
        for name, label in rows:
            logger.debug("%s: %d (%s)", name, label, class_name(label))
        yield rows
    if late:
        report.warn(f"time budget: the deadline passed before the last {late} images; the undefended network alone classified them")
    by_branch = getattr(model, "classified_by_branch", None)
    if by_branch is not None and len(by_branch) and by_branch.sum():
        logger.info("routed recipe: images classified by each branch, in order: %s", ", ".join(str(count) for count in by_branch))


def classify_directory(
    input_dir: Path,
    output_file: Path,
    *,
    model: PredictingModel,
    batch_size: int = 16,
    progress: bool = True,
    time_budget: TimeBudget | None = None,
) -> JobReport:
    """Classify every PNG of ``input_dir`` and write ``name,label`` rows (labels 1..1000, no header).

    Rows are flushed batch by batch, so a run killed at the time limit keeps what it classified.
    An empty INPUT_DIR still gets an (empty) OUTPUT_FILE: the contract expects the file.
    """
    input_dir, output_file = Path(input_dir), Path(output_file)
    check_output_file(input_dir, output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    report = JobReport()
    # The whole file is rewritten atomically after each batch (a few KB): a reader or a kill
    # never sees half a row, and a symlink at OUTPUT_FILE is replaced, never written through.
    text = io.StringIO()
    write_text_atomically(output_file, "", durable=False)
    batches = predict_directory(
        input_dir, model=model, report=report, batch_size=batch_size, progress=progress, time_budget=time_budget
    )
    for rows in batches:
        write_label_rows(text, rows)
        write_text_atomically(output_file, text.getvalue(), durable=False)
    return report


def check_output_file(input_dir: Path, output_file: Path) -> None:
    """Refuse an OUTPUT_FILE that is a folder or would overwrite an input (OSError naming it).

    Inside INPUT_DIR, a ``*.png`` or ``target_class.csv`` name is an input's, present or not.
    """
    output_file = Path(output_file)
    if output_file.is_dir():
        raise IsADirectoryError(errno.EISDIR, "OUTPUT_FILE is a folder", str(output_file))
    inside_input = output_file.parent.resolve() == Path(input_dir).resolve()
    if inside_input and (output_file.suffix.lower() == ".png" or output_file.name == TARGET_CLASS_FILE):
        raise FileExistsError(
            errno.EEXIST,
            "OUTPUT_FILE is named like an input of INPUT_DIR; refusing to overwrite it (write the CSV elsewhere)",
            str(output_file),
        )
