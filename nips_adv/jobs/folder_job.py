"""Walking an INPUT_DIR batch by batch with a progress bar, collecting what went wrong."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..contract.images import ImageBatch, ImageReadError, iter_image_batches, list_png_files

logger = logging.getLogger("nips_adv")


@dataclass
class JobReport:
    """Outcome of a tool run over a folder: images written, and named problems.

    ``failures`` (unreadable inputs) make the tool exit 1; ``warnings`` do not.
    """

    images_found: int = 0
    images_done: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        logger.error(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning(message)

    @property
    def ok(self) -> bool:
        return not self.failures


def input_batches(input_dir: Path, batch_size: int, report: JobReport, *, progress: bool) -> Iterator[ImageBatch]:
    """Batches of the PNGs in ``input_dir``; unreadable ones are reported and skipped.

    The caller processes and writes each batch before asking for the next, so a run killed at
    the time limit keeps every finished batch.
    """
    paths = list_png_files(input_dir)
    report.images_found = len(paths)
    if not paths:
        report.warn(f"{input_dir}: no PNG images found, nothing to do")
        return

    def on_error(error: ImageReadError) -> None:
        report.fail(f"{error}; skipped")

    with (
        tqdm(total=len(paths), unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True) as bar,
        logging_redirect_tqdm(loggers=[logger]),
    ):
        for batch in iter_image_batches(paths, batch_size, on_error):
            yield batch
            report.images_done += len(batch.paths)
            bar.update(len(batch.paths))
        bar.update(len(paths) - bar.n)
