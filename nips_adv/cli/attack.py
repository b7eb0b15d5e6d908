"""``nips-attack`` and ``nips-targeted-attack``: ``INPUT_DIR OUTPUT_DIR MAX_EPSILON``, as the organisers call them."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from ..attacks.losses import LOSSES
from ..attacks.plan import NON_TARGETED_FAMILY, TARGETED_METHOD
from ..attacks.sign_gradient import METHODS, SignGradientConfig, method_config, parse_method_spec
from ..attacks.transforms import COPY_TRANSFORMS
from ..contract.constants import TARGET_CLASS_FILE
from ..jobs.time_budget import AUTO_BUDGET_FRACTION, CONTRACT_SECONDS_PER_IMAGE
from .common import (
    EpsilonType,
    TimeBudgetType,
    configure_logging,
    fail,
    model_options,
    out_of_memory_ends,
    parse_model_option,
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
        which plan and why. --method or any
        recipe option (--iterations, --copies, --decay, ...) pins a recipe instead ({family} when
        only options are given).

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
        help=f"auto: the time-fitted plan; or one of {', '.join(METHODS)}, with settings if wanted "
        "(bsr:copies=5,iterations=20; what each is, and its paper: "
        "docs/attacks.md, or `python -c 'import nips_adv; print(nips_adv.method_table())'`).",
    )
    @click.option("--iterations", type=int, default=None, help="Gradient steps [default: the method's; fgsm: 1].")
    @click.option("--copies", type=int, default=None,
                  help="Copies per step of the methods that make them ("
                  + "; ".join(f"{name}: {entry.copies_are}" for name, entry in COPY_TRANSFORMS.items()) + ") [default: the paper's].")
    @click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=None, help="Pixels per step [default: the method's, e.g. MAX_EPSILON/iterations].")
    @click.option("--decay", type=click.FloatRange(min=0), default=None, help="Momentum decay of MI-FGSM [default: 1.0].")
    @click.option("--diversity-prob", type=click.FloatRange(0, 1), default=None, help="Probability of the DI transform per step.")
    @click.option("--ti-kernel", type=click.IntRange(min=0), default=None, help="Side of the TI Gaussian kernel (odd; 0 = off).")
    @click.option(
        "--loss",
        type=click.Choice(list(LOSSES)),
        default=None,
        help="What the steps climb (targeted: descend) for each image's class: cross-entropy, "
        "-log p(class); margin, the best other class's logit minus the class's (Carlini-Wagner), "
        "which keeps widening the gap after the softmax saturates; logit, -(the class's logit), "
        "Zhao et al.'s targeted loss [default: the method's].",
    )
    @click.option(
        "--own-classes",
        type=click.IntRange(1, 1000),
        default=None,
        hidden=targeted,
        help="Move away from the model's top K classes on the clean image, each weighted by its "
        "probability; 1: its prediction alone. More keeps an image the model gets wrong from being "
        f"pushed onto its true class, usually a runner-up [default: {SignGradientConfig.own_classes}; "
        f"fgsm: {METHODS['fgsm'].own_classes}].",
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
        iterations: int | None,
        copies: int | None,
        step_size: float | None,
        decay: float | None,
        diversity_prob: float | None,
        ti_kernel: int | None,
        loss: str | None,
        own_classes: int | None,
        time_budget: float | str | None,
        model_name: str,
        checkpoint: str | None,
        batch_size: int,
        precision: str,
        seed: int,
        quiet: bool,
        verbose: bool,
    ) -> None:
        started = time.monotonic()
        epsilon = resolve_epsilon(max_epsilon, eps)
        if targeted and own_classes is not None:
            fail(program, "--own-classes is for non-targeted attacks: a targeted one moves toward its target")
        if iterations is not None and iterations < 1:
            fail(program, f"--iterations {iterations}: must be at least 1")
        if copies is not None and copies < 1:
            fail(program, f"--copies {copies}: must be at least 1")
        overrides = dict(
            iterations=iterations, copies=copies, step_size=step_size, decay=decay, diversity_prob=diversity_prob,
            ti_kernel_size=ti_kernel, loss=loss, own_classes=own_classes,
        )
        name, _, settings = method.partition(":")
        if name.strip() != "auto" and name.strip() not in METHODS:
            fail(program, f"--method {method!r}: unknown method {name.strip()!r}; known: auto, {', '.join(METHODS)}")
        if name.strip() == "auto" and settings:
            fail(program, f"--method {method!r}: settings pin a recipe; give a method with them, e.g. {family}:{settings}")
        pinned = method != "auto" or any(value is not None for value in overrides.values())
        config: SignGradientConfig | None = None
        if pinned:
            try:
                spec_name, spec_settings = parse_method_spec(family if method == "auto" else method)
                # The options override the spec's settings, which override the preset's.
                given = {key: value for key, value in overrides.items() if value is not None}
                config = method_config(spec_name, targeted=targeted, **{**spec_settings, **given})
            except (ValueError, TypeError) as error:
                fail(program, f"--method {method!r}: {error}" if settings else str(error))
        members = parse_model_option(program, model_name, checkpoint)
        configure_logging(program, verbose=verbose)

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
            with out_of_memory_ends(program, written, "--batch-size, --copies or --model's ensemble"):
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
                with Classifier.create(members, precision=precision, seed=seed) as model:
                    model_ready = time.monotonic()
                    report = attack_directory(
                        input_dir,
                        output_dir,
                        epsilon,
                        model=model,
                        config=config,
                        targeted=targeted,
                        batch_size=batch_size,
                        progress=not quiet,
                        time_budget=budget,
                        seed=seed,
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
