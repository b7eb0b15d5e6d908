"""``nips-adv score``: accuracy on TrueLabel and hit rate on TargetClass of a folder of images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import (
    EXIT_SOME_FAILED,
    FOLDER,
    HELP_OPTIONS,
    INPUT_FILE,
    ModelOptions,
    configure_logging,
    failing_on,
    model_options,
)

if TYPE_CHECKING:
    from ..evaluation.accuracy import ScoreReport

MAX_NAMES_LISTED = 10


@click.command(name="score", context_settings=HELP_OPTIONS)
@click.argument("images_dir", required=False, type=FOLDER)
@click.option(
    "--dataset",
    "dataset_csv",
    required=True,
    type=INPUT_FILE,
    help="Official dataset CSV (columns ImageId,...,TrueLabel,TargetClass); image IMAGEID.png is row ImageId.",
)
@click.option(
    "--from-predictions",
    "predictions_in",
    type=INPUT_FILE,
    default=None,
    help="Score this FILENAME,LABEL file (a defense's result.csv) instead of classifying IMAGES_DIR.",
)
@click.option(
    "--predictions",
    "predictions_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the model's predictions here as FILENAME,LABEL lines (reusable with --from-predictions).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report, with every prediction, as JSON on stdout.")
@model_options
def score_command(
    images_dir: Path | None,
    dataset_csv: Path,
    predictions_in: Path | None,
    predictions_out: Path | None,
    as_json: bool,
    options: ModelOptions,
) -> None:
    """Classify the PNGs of IMAGES_DIR and score them against a dataset CSV.

    Prints the accuracy (prediction == TrueLabel: what a non-targeted attack lowers) and the
    target hit rate (prediction == TargetClass: what a targeted attack raises) over the images
    that have a dataset row. With --from-predictions, scores a FILENAME,LABEL file instead and
    loads no model.

    Exit status: 0 done, 1 some images could not be read or have no dataset row, or none
    could be scored, 2 usage or set-up error.
    """
    if (images_dir is None) == (predictions_in is None):
        raise click.UsageError("give either IMAGES_DIR (classified with --model) or --from-predictions FILE")
    if predictions_in is not None and predictions_out is not None:
        raise click.UsageError("--predictions writes a model's predictions; with --from-predictions there are none")
    members = options.members("nips-adv score") if images_dir is not None else []
    configure_logging("nips-adv score", verbose=options.verbose)

    from ..contract.csv_files import ContractFileError, write_label_file
    from ..evaluation.accuracy import score_directory, score_prediction_file
    from ..models.catalogue import ModelListError
    from ..models.checkpoints import CheckpointError

    with failing_on("nips-adv score", CheckpointError, ContractFileError, ModelListError):
        if predictions_in is not None:
            report = score_prediction_file(predictions_in, dataset_csv)
            source = {"predictions_file": str(predictions_in)}
        else:
            assert images_dir is not None  # IMAGES_DIR or --from-predictions: checked above
            from ..models.classifier import Classifier

            with Classifier.create(members, precision=options.session_precision, seed=options.seed) as model:
                report = score_directory(images_dir, dataset_csv, model=model, batch_size=options.batch_size,
                                         progress=not options.quiet)
            source = {"images_dir": str(images_dir), "model": options.model}
            if predictions_out is not None:
                write_label_file(predictions_out, report.predictions())

    for line in report.failures:
        click.echo(f"nips-adv score: error: {line}", err=True)
    _echo_names("image(s) have no row in the dataset and are not scored", report.images_not_in_dataset)
    if as_json:
        click.echo(json.dumps({**source, "dataset": str(dataset_csv), **report.to_dict()}, indent=2))
    else:
        _echo_summary(report, dataset_csv)
    if not report.ok or not report.images_scored:
        sys.exit(EXIT_SOME_FAILED)


def _echo_names(what: str, names: list[str]) -> None:
    if not names:
        return
    shown = ", ".join(names[:MAX_NAMES_LISTED])
    more = f" and {len(names) - MAX_NAMES_LISTED} more" if len(names) > MAX_NAMES_LISTED else ""
    click.echo(f"nips-adv score: error: {len(names)} {what}: {shown}{more}", err=True)


def _echo_summary(report: ScoreReport, dataset_csv: Path) -> None:
    if not report.images_scored:
        click.echo(f"no image could be scored against {dataset_csv}")
        return
    unmatched = f"; {len(report.rows_without_image)} dataset rows have no image" if report.rows_without_image else ""
    click.echo(f"images scored    {report.images_scored} (against {dataset_csv}{unmatched})")
    click.echo(f"accuracy         {report.accuracy:.3f}  ({report.correct} of {report.images_scored} predicted as TrueLabel)")
    click.echo(
        f"target hit rate  {report.target_hit_rate:.3f}  "
        f"({report.target_hits} of {report.images_scored} predicted as TargetClass)"
    )
