"""``nips-attack`` and ``nips-targeted-attack``: ``INPUT_DIR OUTPUT_DIR MAX_EPSILON``, as the organisers call them."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from ..attacks.plan import NON_TARGETED_FAMILY, TARGETED_METHOD
from ..attacks.sign_gradient import METHODS, SignGradientConfig, method_config, parse_method_spec
from ..contract.constants import TARGET_CLASS_FILE
from ..jobs.time_budget import AUTO_BUDGET_FRACTION, CONTRACT_SECONDS_PER_IMAGE
from .common import (
    EpsilonType,
    ModelOptions,
    TimeBudgetType,
    configure_logging,
    fail,
    model_options,
    out_of_memory_ends,
    resolve_epsilon,
)


def _attack_command(*, program: str, targeted: bool) -> click.Command:
    family = TARGETED_METHOD if targeted else NON_TARGETED_FAMILY
    goal = (
        f"toward the class given for each image in INPUT_DIR/{TARGET_CLASS_FILE} (lines IMAGEID.png,LABEL; where an image "
        "has two rows with different labels the last one is used, with a warning naming both)"
        if targeted
        else "away from the model's own belief, its top classes weighted by probability (the contract gives no true label)"
    )

    @click.command(
        name=program,
        context_settings={"help_option_names": ["-h", "--help"]},
        help=f"""Attack every PNG in INPUT_DIR {goal}; write PNGs of the same name and size to OUTPUT_DIR.

        MAX_EPSILON (0..255, pixel units) bounds every pixel change: after rounding to uint8,
        |adversarial - clean| <= MAX_EPSILON. It can also be given as --eps.
        Default (--method auto): the strongest recipe that fits the time budget on this machine: a
        one-step pass writes every image, then {family} with as many {'iterations (up to 300)' if targeted else 'copies per step'}
        as the measured speed affords overwrites them batch by batch; one line on stderr says
        which plan and why. --method pins a recipe instead, with its settings if wanted
        (--method {family}:iterations=20 ...; docs/attacks.md lists methods and settings).

        Exit status: 0 done, 1 some images could not be read (the others are written), 2 usage
        or set-up error.""",
    )
    @click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.argument("output_dir", type=click.Path(path_type=Path))
    @click.argument("max_epsilon", type=EpsilonType(), required=False)
    @click.option("--eps", type=EpsilonType(), default=None, help="MAX_EPSILON as an option.")
    @click.option(
        "--method",
        default="auto",
        show_default=True,
        metavar="auto|METHOD[:FIELD=VALUE,...]",
        help=f"auto: the time-fitted plan; or one of {', '.join(METHODS)}, with settings if wanted: "
        "bsr:copies=5,iterations=20, mi-fgsm:step_size=2,decay=0.9,loss=margin, ... (the fields of "
        "SignGradientConfig: iterations, copies, step_size, decay, diversity_prob, ti_kernel_size, loss, "
        f"{'' if targeted else 'own_classes, '}...; what each method is, and its paper: docs/attacks.md).",
    )
    @click.option(
        "--time-budget",
        type=TimeBudgetType(),
        default="auto",
        show_default=True,
        help="Seconds the whole run may take, from its start. When the speed measured on the first "
        "batch says the iterations will not fit, later batches run fewer (never fewer images: a "
        f"missing image scores zero). auto: {AUTO_BUDGET_FRACTION * CONTRACT_SECONDS_PER_IMAGE:g} s per "
        f"image, the contract's 500 s per 100 images less {1 - AUTO_BUDGET_FRACTION:.0%} for start-up; "
        "off: always the configured iterations.",
    )
    @model_options
    def command(
        input_dir: Path,
        output_dir: Path,
        max_epsilon: float | None,
        eps: float | None,
        method: str,
        time_budget: float | str | None,
        options: ModelOptions,
    ) -> None:
        started = time.monotonic()
        epsilon = resolve_epsilon(max_epsilon, eps)
        name, _, settings = method.partition(":")
        if name.strip() != "auto" and name.strip() not in METHODS:
            fail(program, f"--method {method!r}: unknown method {name.strip()!r}; known: auto, {', '.join(METHODS)}")
        if name.strip() == "auto" and settings:
            fail(program, f"--method {method!r}: settings pin a recipe; give a method with them, e.g. {family}:{settings}")
        config: SignGradientConfig | None = None
        if name.strip() != "auto":
            try:
                spec_name, spec_settings = parse_method_spec(method)
                if targeted and "own_classes" in spec_settings:
                    raise ValueError("own_classes is for non-targeted attacks: a targeted one moves toward its target")
                config = method_config(spec_name, targeted=targeted, **spec_settings)
            except (ValueError, TypeError) as error:
                fail(program, f"--method {method!r}: {error}")
        members = options.members(program)
        configure_logging(program, verbose=options.verbose)

        from ..attacks.directory import OutputDirError, attack_directory, check_output_dir
        from ..contract.csv_files import ContractFileError
        from ..contract.images import list_png_files
        from ..jobs.time_budget import TimeBudget, auto_budget_seconds
        from ..models.catalogue import ModelListError
        from ..models.checkpoints import CheckpointError
        from ..models.classifier import Classifier

        def written() -> int:
            return len(list_png_files(output_dir)) if output_dir.is_dir() else 0

        try:
            with out_of_memory_ends(program, written, "--batch-size, the method's copies or --model's ensemble"):
                check_output_dir(input_dir, output_dir)
                if targeted and not (input_dir / TARGET_CLASS_FILE).exists():
                    fail(program, f"{input_dir / TARGET_CLASS_FILE}: missing (a targeted attack needs it)")
                if targeted and (input_dir / TARGET_CLASS_FILE).is_dir():
                    fail(program, f"{input_dir / TARGET_CLASS_FILE}: is a folder, not a FILENAME,LABEL file")
                budget_seconds = time_budget if isinstance(time_budget, float) else None
                if time_budget == "auto" or (time_budget is None and config is None):
                    # The default plan needs a budget to plan for: with 'off', the contract's.
                    budget_seconds = auto_budget_seconds(len(list_png_files(input_dir)))
                budget = TimeBudget(deadline=started + budget_seconds) if budget_seconds is not None else None
                with Classifier.create(members, precision=options.session_precision, seed=options.seed) as model:
                    model_ready = time.monotonic()
                    report = attack_directory(
                        input_dir,
                        output_dir,
                        epsilon,
                        model=model,
                        config=config,
                        targeted=targeted,
                        batch_size=options.batch_size,
                        progress=not options.quiet,
                        time_budget=budget,
                        seed=options.seed,
                        compare_precisions=config is None and options.compare_precisions,
                    )
                    folder_done = time.monotonic()
        except (CheckpointError, ContractFileError, OutputDirError, ModelListError) as error:
            fail(program, str(error))
        except OSError as error:
            fail(program, f"{error.filename or ''}: {error.strerror or error}")
        logging.getLogger("nips_adv").debug(
            "time: start-up %.1f s (checks, graph, weights), folder %.1f s, closing %.1f s, total %.1f s%s",
            model_ready - started, folder_done - model_ready, time.monotonic() - folder_done, time.monotonic() - started,
            f" of the {budget_seconds:.0f} s budget" if budget_seconds is not None else "",
        )
        if not report.ok:
            click.echo(
                f"{program}: {report.images_done} of {report.images_found} images written; "
                f"{len(report.failures)} could not be read",
                err=True,
            )
            sys.exit(1)

    return command


attack_command = _attack_command(program="nips-attack", targeted=False)
targeted_attack_command = _attack_command(program="nips-targeted-attack", targeted=True)
