"""``nips-defense INPUT_DIR OUTPUT_FILE``: one ``FILENAME,LABEL`` line per PNG, labels 1..1000."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from ..defenses.recipes import DEFAULT_DEFENSE_MODEL, DEFAULT_RECIPE
from .common import (
    ModelOptions,
    TimeBudgetType,
    configure_logging,
    fail,
    model_options,
    out_of_memory_ends,
)


@click.command(name="nips-defense", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plain", is_flag=True, help="No defense: the classifier's own argmax (what scoring uses).")
@click.option(
    "--recipe",
    default=None,
    metavar="STEP[:ARG]+...",
    help="A preset (routed, colour-routed, denoised) or transforms in front of the classifier, left to right, e.g. "
    "jpeg:75+resize-pad:2, or recipes routed by colour-noise level (RECIPE,from:LEVEL,RECIPE,..., a branch A|B a consensus); "
    "steps and grammar: docs/defenses.md "
    f"[default: routed = {DEFAULT_RECIPE}].",
)
@click.option(
    "--denoiser",
    "denoisers",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="WEIGHTS.npz",
    help="Weights for the recipe's denoiser steps that name no file, any file name (repeat: one view per "
    "file, averaged) [default: the packaged denoiser].",
)
@click.option(
    "--passes",
    type=click.IntRange(min=1),
    default=None,
    help="Random passes averaged per image by a random recipe; the time budget may lower it [default: 4].",
)
@click.option(
    "--time-budget",
    type=TimeBudgetType(),
    default="auto",
    show_default=True,
    help="Seconds the whole run may take; later batches average fewer random passes when the speed measured on "
    "the first says they will not fit. auto: 4.5 s per image; off: always --passes.",
)
@model_options(default_model=DEFAULT_DEFENSE_MODEL)
def defense_command(
    input_dir: Path,
    output_file: Path,
    plain: bool,
    recipe: str | None,
    denoisers: tuple[Path, ...],
    passes: int | None,
    time_budget: float | str | None,
    options: ModelOptions,
) -> None:
    """Classify every PNG in INPUT_DIR; write FILENAME,LABEL lines (no header) to OUTPUT_FILE.

    Labels are TF-slim ImageNet labels 1..1000. Exit status: 0 done, 1 some images could not be
    read (the others are classified), 2 usage or set-up error.
    """
    started = time.monotonic()
    if plain and recipe not in (None, "plain"):
        fail("nips-defense", f"--plain and --recipe {recipe!r} disagree: give one")
    members = options.members("nips-defense")
    configure_logging("nips-defense", verbose=options.verbose)

    from ..contract.images import list_png_files
    from ..defenses.denoiser import DenoiserWeightsError
    from ..defenses.directory import check_output_file, classify_directory
    from ..defenses.recipes import (
        DEFAULT_PASSES,
        DefendedClassifier,
        RecipeError,
        parse_recipe,
    )
    from ..jobs.time_budget import TimeBudget, auto_budget_seconds
    from ..models.catalogue import ModelListError
    from ..models.checkpoints import CheckpointError
    from ..models.classifier import Classifier

    logger = logging.getLogger("nips_adv")
    try:
        # Recipe, weights and OUTPUT_FILE are checked before the model loads: a refusal is instant
        # and nothing is written.
        chosen = parse_recipe("plain" if plain else recipe or DEFAULT_RECIPE, seed=options.seed, denoisers=denoisers)
        check_output_file(input_dir, output_file)
        logger.debug("recipe %s, seed %d%s", chosen.name, options.seed, f", passes {passes or DEFAULT_PASSES}" if chosen.random else "")
        budget_seconds = time_budget if isinstance(time_budget, float) else None
        if time_budget == "auto":
            budget_seconds = auto_budget_seconds(len(list_png_files(input_dir)))
        budget = TimeBudget(deadline=started + budget_seconds) if budget_seconds else None
        def written() -> int:
            return len(output_file.read_text().splitlines()) if output_file.is_file() else 0

        with out_of_memory_ends("nips-defense", written, "--batch-size, --passes or --model's ensemble"), \
                Classifier.create(members, precision=options.session_precision, seed=options.seed) as classifier:
            model = classifier if chosen.plain else DefendedClassifier(classifier, chosen, passes=passes or DEFAULT_PASSES)
            report = classify_directory(
                input_dir, output_file, model=model, batch_size=options.batch_size, progress=not options.quiet, time_budget=budget
            )
    except (CheckpointError, ModelListError, RecipeError, DenoiserWeightsError) as error:
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
