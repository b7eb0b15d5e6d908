"""The defense over a whole INPUT_DIR: one ``FILENAME,LABEL`` line per readable PNG."""

from __future__ import annotations

import errno
import io
import logging
from collections.abc import Iterator
from pathlib import Path

from .atomic import write_text_atomically
from .contract.constants import TARGET_CLASS_FILE
from .contract.csv_files import write_label_rows
from .contract.folder_job import JobReport, input_batches
from .labels import class_name
from .models.classifier import Classifier

logger = logging.getLogger("nips_adv")


def predict_directory(
    input_dir: Path,
    *,
    model: Classifier,
    report: JobReport,
    batch_size: int = 16,
    progress: bool = True,
) -> Iterator[list[tuple[str, int]]]:
    """``(file name, label 1..1000)`` pairs for the PNGs of ``input_dir``, one list per batch.

    Unreadable images are recorded in ``report`` and skipped; ``report.images_done`` counts
    the images of the batches the caller has consumed.
    """
    for batch in input_batches(Path(input_dir), batch_size, report, progress=progress):
        rows = list(zip(batch.names, model.predict(batch.pixels).tolist()))
        for name, label in rows:
            logger.debug("%s: %d (%s)", name, label, class_name(label))
        yield rows


def classify_directory(
    input_dir: Path,
    output_file: Path,
    *,
    model: Classifier,
    batch_size: int = 16,
    progress: bool = True,
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
    for rows in predict_directory(input_dir, model=model, report=report, batch_size=batch_size, progress=progress):
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
