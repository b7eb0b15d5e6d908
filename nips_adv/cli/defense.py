"""``nips-defense INPUT_DIR OUTPUT_FILE``: one ``FILENAME,LABEL`` line per PNG, labels 1..1000."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import configure_logging, fail, model_options, parse_model_option


@click.command(name="nips-defense", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_file", type=click.Path(dir_okay=False, path_type=Path))
@model_options
def defense_command(
    input_dir: Path,
    output_file: Path,
    model_name: str,
    checkpoint: str | None,
    batch_size: int,
    precision: str,
    seed: int,
    quiet: bool,
    verbose: bool,
) -> None:
    """Classify every PNG in INPUT_DIR; write FILENAME,LABEL lines (no header) to OUTPUT_FILE.

    Labels are TF-slim ImageNet labels 1..1000. Exit status: 0 done, 1 some images could not be
    read (the others are classified), 2 usage or set-up error.
    """
    members = parse_model_option("nips-defense", model_name, checkpoint)
    configure_logging("nips-defense", verbose=verbose)

    from ..defense import check_output_file, classify_directory
    from ..models.catalogue import ModelListError
    from ..models.checkpoints import CheckpointError
    from ..models.classifier import Classifier

    try:
        check_output_file(input_dir, output_file)  # before the model loads: a refusal is instant
        with Classifier.create(members, precision=precision, seed=seed) as model:
            report = classify_directory(input_dir, output_file, model=model, batch_size=batch_size, progress=not quiet)
    except (CheckpointError, ModelListError) as error:
        fail("nips-defense", str(error))
    except OSError as error:
        fail("nips-defense", f"{error.filename or output_file}: {error.strerror or error}")
    if not report.ok:
        click.echo(
            f"nips-defense: {report.images_done} of {report.images_found} images classified; "
            f"{len(report.failures)} could not be read",
            err=True,
        )
        sys.exit(1)
