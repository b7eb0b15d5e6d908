"""An attack over a whole INPUT_DIR, as the contract runs it: read, attack, write, batch by batch."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..contract.csv_files import read_target_classes
from ..contract.images import ImageBatch, iter_image_batches, list_png_files, write_png
from ..contract.labels import class_name
from ..jobs.folder_job import JobReport, input_batches
from ..jobs.time_budget import TimeBudget
from ..models.classifier import Classifier
from .losses import own_labels
from .plan import choose_plan, cost_per_image, first_pass_config
from .sign_gradient import AttackInterrupted, SignGradientConfig, shrunk_for_attack, sign_gradient_attack

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
    config: SignGradientConfig | None,
    targeted: bool = False,
    batch_size: int = 16,
    progress: bool = True,
    time_budget: TimeBudget | None = None,
    true_labels: Mapping[str, int] | None = None,
    seed: int = 0,
    compare_precisions: bool = False,
) -> JobReport:
    """Write one adversarial PNG per input PNG (same name and size) into ``output_dir``.

    ``config`` None: the default plan (``plan.py``): a one-step pass writes every image, then the
    strongest recipe that fits ``time_budget`` (required then) overwrites them batch by batch, as
    long as a step of the next batch fits; one log line says which recipe and why. A ``config``:
    that recipe, one pass; with a ``time_budget`` batches after the first run fewer iterations when
    the configured number would not finish by its deadline, down to one step (FGSM-like, the whole
    eps) when not even one fits: a warning says so; every image is written, a missing one scores zero.

    Non-targeted attacks move away from the model's own top classes (``config.own_classes``;
    the contract gives no true label). Targeted attacks read ``INPUT_DIR/target_class.csv`` (ContractFileError when it is
    missing); an image absent from it is attacked toward its least-likely class, with a warning.

    ``compare_precisions`` (the default plan, a model with ``reopen``): after the first pass, its step is timed
    in bfloat16 too and the refinement runs in the faster precision (``--precision auto``).

    ``true_labels`` (file name -> label 1..1000), for studies outside the contract: a non-targeted
    attack moves away from these instead, as attack libraries are usually benchmarked; an image
    absent from them moves away from the model's prediction, with a warning. The tools never pass it.
    """
    if targeted and true_labels is not None:
        raise ValueError("true_labels are for non-targeted attacks: a targeted one reads target_class.csv")
    if config is None and time_budget is None:
        raise ValueError("the default plan needs a time budget to plan for")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_output_dir(input_dir, output_dir)
    report = JobReport()
    targets: dict[str, int] = {}
    if targeted:
        target_file = read_target_classes(input_dir)
        for problem in target_file.problems:
            report.warn(f"{problem}; row skipped")
        for conflict in target_file.conflicts:
            report.warn(conflict)
        targets = target_file.labels
    job = _Job(input_dir, output_dir, eps, model, targeted, targets, true_labels, report, seed)
    job.compare_precisions = compare_precisions and hasattr(model, "reopen")
    if config is not None:
        job.single_pass(config, batch_size, progress, time_budget)
    else:
        job.planned(batch_size, progress, time_budget)
    job.log_times()
    return report


@dataclass
class PassTimes:
    """Where one pass over the folder spent its seconds: the attack's gradients, and reading and writing."""

    images: int = 0
    gradients: int = 0
    """Image-copy gradients computed (iterations x copies x variance samples, per image)."""
    attack_seconds: float = 0.0
    io_seconds: float = 0.0
    """Reading and decoding the PNGs, looking up labels, encoding and writing the outputs."""

    def add(self, *, images: int, gradients: int, attack_seconds: float, io_seconds: float) -> None:
        self.images += images
        self.gradients += gradients
        self.attack_seconds += attack_seconds
        self.io_seconds += io_seconds

    def describe(self, name: str) -> str:
        rate = f" at {self.gradients / self.attack_seconds:.2f}/s" if self.attack_seconds > 0 else ""
        return (f"{name} {self.attack_seconds + self.io_seconds:.1f} s for {self.images} images (attack "
                f"{self.attack_seconds:.1f} s: {self.gradients} image-gradients{rate}, reading and writing {self.io_seconds:.1f} s)")


class _Job:
    """One attack run over a folder: labels per image name, and the passes that write the outputs."""

    def __init__(self, input_dir: Path, output_dir: Path, eps: float, model: Classifier, targeted: bool,
                 targets: Mapping[str, int], true_labels: Mapping[str, int] | None, report: JobReport, seed: int) -> None:
        self.input_dir, self.output_dir, self.eps, self.model = input_dir, output_dir, eps, model
        self.targeted, self.targets, self.true_labels, self.report, self.seed = targeted, targets, true_labels, report, seed
        self.labels_by_name: dict[str, int] = {}
        self.passes: dict[str, PassTimes] = {}
        self.compare_precisions = False

    def labels(self, batch: ImageBatch) -> np.ndarray | None:
        """The batch's targets (or true labels); None: the model's own classes. Looked up once per image."""
        if not self.targeted and self.true_labels is None:
            return None
        unknown = [index for index, name in enumerate(batch.names) if name not in self.labels_by_name]
        if unknown:
            names = tuple(batch.names[index] for index in unknown)
            known = self.targets if self.targeted else self.true_labels
            found = _known_labels(names, known, self.model, batch.pixels[unknown], self.report, targeted=self.targeted)
            for name, label in zip(names, found):
                self.labels_by_name[name] = int(label)
                if self.targeted:
                    logger.debug("%s: toward %d (%s)", name, label, class_name(int(label)))
        return np.array([self.labels_by_name[name] for name in batch.names], dtype=np.int64)

    def attack_labels(self, batch: ImageBatch, config: SignGradientConfig) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The batch's labels and their weights for the attack: targets or true labels, else the model's own
        classes (a forward pass, which callers time as the batch's overhead, not as its gradients)."""
        labels = self.labels(batch)
        if labels is None and self.eps > 0:
            return own_labels(self.model.logits(shrunk_for_attack(self.model, batch.pixels)), config.own_classes)
        return labels, None

    def attack(self, batch: ImageBatch, config: SignGradientConfig, times: PassTimes, clock, deadline: float | None = None) -> float | None:
        """Attack and write ``batch``; returns the attack's seconds (its gradients), adding them and the
        batch's label look-up and writing to ``times``. Past ``deadline`` (a value of ``clock``, checked
        before every iteration) the attack stops, nothing is written, and None is returned."""
        lookup_started = clock()
        labels, weights = self.attack_labels(batch, config)
        attack_started = clock()
        stop = None if deadline is None else (lambda: clock() >= deadline)
        try:
            adversarial = sign_gradient_attack(
                self.model, batch.pixels, self.eps, labels=labels, targeted=self.targeted, config=config, seed=self.seed, stop=stop,
                label_weights=weights,
            )
        except AttackInterrupted:
            return None
        attack_ended = clock()
        self.write(batch.names, adversarial)
        attack_seconds = attack_ended - attack_started
        times.add(images=len(batch.names), gradients=len(batch.names) * cost_per_image(config),
                  attack_seconds=attack_seconds, io_seconds=attack_started - lookup_started + clock() - attack_ended)
        return attack_seconds

    def log_times(self) -> None:
        """One line (shown with --verbose): where the folder's seconds went, pass by pass."""
        if self.passes:
            logger.debug("time: %s", "; ".join(times.describe(name) for name, times in self.passes.items()))

    def write(self, names: tuple[str, ...], images: np.ndarray) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name, pixels in zip(names, images):
            write_png(pixels, self.output_dir / name)

    def single_pass(self, config: SignGradientConfig, batch_size: int, progress: bool, time_budget: TimeBudget | None) -> None:
        """``config`` on every batch. With a budget, a one-step pass writes every image first, then
        ``config`` overwrites them batch by batch, its iterations cut to what the time left affords
        (down to one step); at the deadline, even inside a batch, the rest keep their one-step version."""
        if time_budget is None:
            self.run_pass(config, batch_size, progress, None, name="attack")
            return
        first_budget = TimeBudget(deadline=time_budget.deadline, clock=time_budget.clock)
        self.run_pass(first_pass_config(self.targeted), batch_size, progress, first_budget, name="first pass")
        done = [self.input_dir / name for name in _written_names(self.report, self.output_dir, self.input_dir)]
        if not done:
            return
        refine = TimeBudget(deadline=time_budget.deadline, clock=time_budget.clock)
        if first_budget.measured:
            # One FGSM step is one iteration of the recipe without its copies: a floor, revised after the first batch.
            refine.assume(seconds_per_image_iteration=first_budget.steady_seconds_per_image_iteration * config.gradients_per_iteration,
                          seconds_per_image_overhead=first_budget.seconds_per_image_overhead)
        clock = time_budget.clock
        times = self.passes.setdefault("attack", PassTimes())
        full = fewer = 0
        previous_iterations = config.iterations
        images_left = len(done)
        batch_started = clock()
        for batch in iter_image_batches(done, batch_size, lambda error: None):
            times.io_seconds += clock() - batch_started
            iterations = refine.iterations_for(config.iterations, images_left)
            if not refine.fits(iterations=1, images=len(batch.names)) and refine.measured:
                break
            if iterations != previous_iterations:
                _warn_iterations(self.report, refine, batch.names[0], iterations, config.iterations, images_left)
                previous_iterations = iterations
            attack_seconds = self.attack(batch, replace(config, iterations=iterations), times, clock, deadline=time_budget.deadline)
            if attack_seconds is None:
                break
            batch_ended = clock()
            refine.record(images=len(batch.names), iterations=iterations, attack_seconds=attack_seconds,
                          other_seconds=batch_ended - batch_started - attack_seconds)
            batch_started = batch_ended
            images_left -= len(batch.names)
            full, fewer = (full + len(batch.names), fewer) if iterations == config.iterations else (full, fewer + len(batch.names))
        if full < len(done):
            self.report.warn(
                f"time budget: planned {config.iterations} iterations on {len(done)} images; ran them all on {full}, "
                f"fewer on {fewer}, and {len(done) - full - fewer} keep their one-step version"
            )

    def run_pass(self, config: SignGradientConfig, batch_size: int, progress: bool, time_budget: TimeBudget | None,
                 name: str) -> None:
        """``config`` on every batch as read; the budget cuts iterations, down to one step, which always runs:
        every image is written, even when start-up alone outlasted the budget."""
        report = self.report
        clock = time_budget.clock if time_budget is not None else time.monotonic
        times = self.passes.setdefault(name, PassTimes())
        batch_started = clock()
        previous_iterations = config.iterations
        for batch in input_batches(self.input_dir, batch_size, report, progress=progress):
            batch_config = config
            if time_budget is not None:
                images_left = report.images_found - report.images_done - len(report.failures)
                iterations = time_budget.iterations_for(config.iterations, images_left)
                if iterations != config.iterations:
                    batch_config = replace(config, iterations=iterations)
                if iterations != previous_iterations:
                    late = not time_budget.fits(iterations=1, images=len(batch.names))
                    _warn_iterations(report, time_budget, batch.names[0], iterations, config.iterations, images_left, late=late)
                    previous_iterations = iterations
            times.io_seconds += clock() - batch_started  # reading (and the budget's arithmetic)
            attack_seconds = self.attack(batch, batch_config, times, clock)
            assert attack_seconds is not None  # no deadline: never interrupted
            batch_ended = clock()
            if time_budget is not None:
                time_budget.record(
                    images=len(batch.names),
                    iterations=batch_config.iterations,
                    attack_seconds=attack_seconds,
                    other_seconds=batch_ended - batch_started - attack_seconds,
                )
            batch_started = batch_ended

    def planned(self, batch_size: int, progress: bool, time_budget: TimeBudget) -> None:
        """The default: a one-step pass over every image, then the plan the time left affords, revised
        after every refinement batch from the refinement's own measured speed (up or down). When every
        image is refined and the time left buys a plan at least ``REROUND_FACTOR`` times as costly, another
        round (at most ``MAX_ROUNDS``) overwrites them batch by batch; a batch it cannot finish keeps its
        previous version."""
        clock = time_budget.clock
        first_budget = TimeBudget(deadline=time_budget.deadline, clock=clock)
        # At least two batches, so that the speed the plan starts from is measured past the graph's compilation.
        first_batch_size = max(1, min(batch_size, math.ceil(len(list_png_files(self.input_dir)) / 2)))
        self.run_pass(first_pass_config(self.targeted), first_batch_size, progress, first_budget, name="first pass")
        done = [self.input_dir / name for name in _written_names(self.report, self.output_dir, self.input_dir)]
        if not done or not first_budget.measured or first_budget.steady_seconds_per_image_iteration <= 0:
            return
        seconds_per_gradient = first_budget.steady_seconds_per_image_iteration  # FGSM: 1 gradient per image
        if self.compare_precisions and time_budget.seconds_left() > PRECISION_TRIAL_MIN_SECONDS:
            seconds_per_gradient = self.faster_precision(done[:first_batch_size], seconds_per_gradient, time_budget)
        # Costs in image-gradients: the refinement's "iterations" below are gradients per image.
        refine = TimeBudget(deadline=time_budget.deadline, clock=clock)
        refine.assume(seconds_per_image_iteration=seconds_per_gradient,
                      seconds_per_image_overhead=first_budget.seconds_per_image_overhead)
        source = "the first pass"
        times = self.passes.setdefault("refinement", PassTimes())
        cost_of: dict[str, int] = {}  # image name -> the image-gradients its written version cost (absent: one step)
        for round_number in range(1, MAX_ROUNDS + 1):
            config: SignGradientConfig | None = None
            kept = "their one-step version" if round_number == 1 else "the previous round's version"
            images_left = len(done)
            batch_started = clock()
            for batch in iter_image_batches(done, batch_size, lambda error: None):
                times.io_seconds += clock() - batch_started
                affordable = affordable_gradients(refine.seconds_left(), images_left, refine.seconds_per_image_overhead,
                                                  refine.seconds_per_image_iteration)
                plan = choose_plan(targeted=self.targeted, gradients_per_image=affordable)
                previous = max((cost_of.get(name, 1) for name in batch.names), default=1)
                if round_number > 1 and (plan.config is None or cost_per_image(plan.config) < REROUND_FACTOR * previous):
                    return  # no clearly stronger version fits: the rest keep the previous round's
                if plan.config != config:
                    logger.info(
                        "plan%s%s: %s; %s (%.3f s per image-gradient measured on %s, %d images, %.0f s left)",
                        f", round {round_number}" if round_number > 1 else "",
                        "" if config is None else f" from {batch.names[0]} on", plan.description, plan.reason,
                        refine.seconds_per_image_iteration, source, images_left, max(0.0, refine.seconds_left()),
                    )
                    config = plan.config
                if config is None:
                    self.report.warn(f"time budget: no more than one step fits from {batch.names[0]} on; {images_left} images keep {kept}")
                    return
                cost = cost_per_image(config)
                attack_seconds = self.attack(batch, config, times, clock, deadline=time_budget.deadline)
                if attack_seconds is None:
                    self.report.warn(f"time budget: the plan ({plan.description}) was cut at the deadline from {batch.names[0]} on; "
                                     f"{images_left} images keep {kept}")
                    return
                batch_ended = clock()
                refine.record(images=len(batch.names), iterations=cost, attack_seconds=attack_seconds,
                              other_seconds=batch_ended - batch_started - attack_seconds)
                batch_started = batch_ended
                images_left -= len(batch.names)
                cost_of.update(dict.fromkeys(batch.names, cost))
                source = "the refinement"
            # Every image refined. The first batch's measure includes compiling the graphs, so a short folder
            # (one batch or two) finishes early: spend what is left on a clearly stronger round, from clean again.
            if affordable_gradients(refine.seconds_left(), len(done), refine.seconds_per_image_overhead,
                                    refine.seconds_per_image_iteration) < REROUND_FACTOR * min(cost_of.values()):
                return


    def faster_precision(self, paths: list[Path], float32_seconds: float, time_budget: TimeBudget) -> float:
        """Time the first pass's step in bfloat16 on ``paths`` (one image compiles it, then up to
        ``PRECISION_TRIAL_IMAGES`` are timed) against its float32 seconds per image-gradient, keep bfloat16 when
        it is ``BFLOAT16_MIN_GAIN`` times faster, else float32 (one log line says which and why), and
        return its seconds per image-gradient. A failure or the deadline keeps float32."""
        model, clock = self.model, time_budget.clock
        config = first_pass_config(self.targeted)
        batch = next(iter_image_batches(paths, len(paths), lambda error: None), None)
        if batch is None or float32_seconds <= 0:
            return float32_seconds
        stop = lambda: clock() >= time_budget.deadline  # noqa: E731
        try:
            model.reopen("bfloat16")  # type: ignore[attr-defined]
            labels, weights = self.attack_labels(batch, config)
            if labels is None:  # eps 0: nothing to time
                return float32_seconds
            for rows in (slice(0, 1), slice(0, PRECISION_TRIAL_IMAGES)):  # one image compiles the step; then it is timed
                started = clock()
                sign_gradient_attack(model, batch.pixels[rows], self.eps, labels=labels[rows], targeted=self.targeted,
                                     config=config, seed=self.seed, stop=stop, label_weights=None if weights is None else weights[rows])
            bfloat16_seconds = (clock() - started) / len(batch.pixels[rows])
        except Exception as error:  # noqa: BLE001 - any failure of the trial leaves the run in float32
            model.reopen("float32")  # type: ignore[attr-defined]
            logger.info("precision: float32 (the bfloat16 trial failed: %s)", str(error).splitlines()[0] if str(error) else type(error).__name__)
            return float32_seconds
        faster = "bfloat16" if bfloat16_seconds * BFLOAT16_MIN_GAIN <= float32_seconds else "float32"
        if faster == "float32":
            model.reopen("float32")  # type: ignore[attr-defined]
        logger.info("precision: %s (%.3f s per image-gradient in bfloat16, %.3f in float32, timed on the first pass's step)",
                    faster, bfloat16_seconds, float32_seconds)
        return bfloat16_seconds if faster == "bfloat16" else float32_seconds


BFLOAT16_MIN_GAIN = 1.2
"""bfloat16 is kept only when its step is at least this much faster: an eight-image trial varies by about 10%
between runs, and bfloat16 gradients agree in sign with float32 on fewer pixels (docs/attacks.md)."""

PRECISION_TRIAL_MIN_SECONDS = 60.0
"""``--precision auto`` times bfloat16 only when this much of the budget is left: the trial costs a session, a
compile and a step of a few images, and a session again when float32 stays."""
PRECISION_TRIAL_IMAGES = 8
"""Images of the timed bfloat16 step: enough for a steady per-image figure, few enough to cost seconds."""

MAX_ROUNDS = 3
"""Refinement rounds at most: a folder the plan under-spent on gets another, stronger pass."""
REROUND_FACTOR = 2.0
"""Another round replaces an image's version only with a plan costing at least this many times as much."""


def _warn_iterations(report: JobReport, budget: TimeBudget, first_name: str, iterations: int, configured: int,
                     images_left: int, *, late: bool = False) -> None:
    """One warning: from which image on the budget runs ``iterations`` of the ``configured`` ones, and why."""
    share = "all" if iterations == configured else f"{iterations} of the"
    report.warn(
        f"time budget: {'not even one step fits; ' if late else ''}from {first_name} on, {share} {configured} iterations "
        f"({budget.seconds_per_image_iteration:.2f} s per image-iteration measured; "
        f"{images_left} images and {max(0.0, budget.seconds_left()):.0f} s left)"
    )


PLAN_SAFETY = 0.85
"""The plan spends 85% of the time left: the refinement's graph (copies, transforms) is compiled on
its first batch and its small chunks run a little slower per gradient than the first pass's batches."""


COMPILE_RESERVE_S = 10.0
"""Seconds kept for building the refinement's gradient graph (transforms and copies), before its first batch."""


def _written_names(report: JobReport, output_dir: Path, input_dir: Path) -> list[str]:
    """The inputs the first pass wrote (every readable one), in the listing's order."""
    return [path.name for path in list_png_files(input_dir) if (output_dir / path.name).is_file()]


def _known_labels(
    names: tuple[str, ...], known: Mapping[str, int], model: Classifier, pixels: np.ndarray, report: JobReport,
    *, targeted: bool,
) -> np.ndarray:
    """The labels of ``names`` in ``known``; for the others, the model's least-likely class (a target)
    or its prediction (a class to leave), with a warning each."""
    missing = [index for index, name in enumerate(names) if name not in known]
    labels = np.array([known.get(name, 0) for name in names], dtype=np.int64)
    if missing:
        logits = model.logits(shrunk_for_attack(model, pixels[missing]))
        fallback = (np.argmin(logits, axis=1) if targeted else np.argmax(logits, axis=1)) + 1
        for index, label in zip(missing, fallback):
            if targeted:
                report.warn(f"{names[index]}: not in target_class.csv; attacking toward its least-likely class {label}")
            else:
                report.warn(f"{names[index]}: no true label given; attacking away from its predicted class {label}")
            labels[index] = label
    return labels


def affordable_gradients(seconds_left: float, images_left: int, seconds_per_image_overhead: float,
                         seconds_per_gradient: float) -> float:
    """Image-gradients per image the time left buys: ``PLAN_SAFETY`` of it, less the compile reserve and
    each image's overhead (reading, writing), at the measured seconds per image-gradient."""
    seconds_each = (PLAN_SAFETY * seconds_left - COMPILE_RESERVE_S) / images_left - seconds_per_image_overhead
    return seconds_each / seconds_per_gradient
