"""Speed figures of this machine for the attack: matmul peak, image-gradients per second, the default plan's
throughput and the plan it affords, a 100-image run and where its time went, and for an ensemble its one-graph
step against the sum of its members' own steps.

Printed by ``nips-adv bench``; targets live here as figures to read, never as timed tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..contract.images import list_png_files, read_png, write_png

if TYPE_CHECKING:
    from ..models.classifier import Member

INCEPTION_V3_FORWARD_GFLOP = 11.5
"""Multiply-adds x 2 of one 299x299 Inception V3 forward pass (5.7 G multiply-adds)."""

GRADIENT_FLOP_FACTOR = 2.0
"""Forward plus backward to the input costs about twice the forward (no weight gradients)."""

@dataclass(frozen=True)
class Throughput:
    label: str
    per_second: float
    seconds_per_call: float


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a ``size`` x ``size`` matmul in a TensorFlow session (the best of ``repeats``)."""
    from ..models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        # Variables, not constants: grappler would fold a product of constants away.
        left = tf1.Variable(tf1.random_normal((size, size)))
        right = tf1.Variable(tf1.random_normal((size, size)))
        product = tf.reduce_sum(tf.matmul(left, right))
        initialise = tf1.global_variables_initializer()
    with tf1.Session(graph=graph) as session:
        session.run(initialise)
        session.run(product)
        best = min(_timed(lambda: session.run(product)) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def gradient_throughput(
    members: "Sequence[Member]", *, precision: str, batch_size: int = 16, repeats: int = 3
) -> Throughput:
    """Image-gradients per second (forward + backward to the pixels) of the classifier of ``members`` (one model or
    an ensemble, each Member with its checkpoint) at ``batch_size``, best of ``repeats``."""
    from ..models.classifier import Classifier

    pixels, labels = _gradient_inputs(batch_size)
    with Classifier.create(list(members), precision=precision) as model:
        step = _gradient_step(model, pixels, labels)
        best = min(_timed(step) for _ in range(repeats))
    return Throughput(f"{_list_text(members)} {precision} batch {batch_size}", batch_size / best, best)


@dataclass(frozen=True)
class EnsembleStep:
    """One gradient step of an ensemble (one graph, one ``session.run``) and of each member alone, measured together."""

    members: tuple[Throughput, ...]
    ensemble: Throughput

    @property
    def members_seconds(self) -> float:
        """The sum of the members' own step times: what running them one after another costs."""
        return sum(member.seconds_per_call for member in self.members)

    @property
    def ratio(self) -> float:
        """Ensemble step time / the sum of the members' (issue 11's target: at most 1.05)."""
        return self.ensemble.seconds_per_call / self.members_seconds


def ensemble_step(
    members: "Sequence[Member]", *, precision: str = "float32", batch_size: int = 16, repeats: int = 3
) -> EnsembleStep:
    """Time a gradient step of each member alone and of the ensemble of ``members``, best of ``repeats`` each.

    The classifiers are all open at once and timed in interleaved rounds (each round times every
    one once), so a neighbour's load on a shared machine falls on the members and the ensemble alike.
    """
    from contextlib import ExitStack

    from ..models.classifier import Classifier

    pixels, labels = _gradient_inputs(batch_size)
    groups = [[member] for member in members] + [list(members)]
    with ExitStack() as stack:
        steps = [
            _gradient_step(stack.enter_context(Classifier.create(group, precision=precision)), pixels, labels) for group in groups
        ]
        best = [min(times) for times in zip(*[[_timed(step) for step in steps] for _ in range(repeats)])]
    figures = [
        Throughput(f"{_list_text(group)} {precision} batch {batch_size}", batch_size / seconds, seconds)
        for group, seconds in zip(groups, best)
    ]
    return EnsembleStep(tuple(figures[:-1]), figures[-1])


@dataclass(frozen=True)
class PlanThroughput:
    """The default plan's refinement step measured on this machine, and the plan a 100-image run would choose."""

    step: Throughput
    """Image-gradients (one per image, copy and variance sample) per second of the recipe at its most copies."""
    start_up_seconds: float
    """Opening the classifier: building its graph and restoring its weights."""
    plan_description: str
    plan_reason: str


def plan_throughput(
    members: "Sequence[Member]",
    *,
    batch_size: int = 16,
    repeats: int = 2,
    image_count: int = 100,
) -> PlanThroughput:
    """Time one iteration of the non-targeted default recipe (``attacks.plan``) at its most copies on the
    classifier of ``members``, best of ``repeats`` after a compiling call, and ask the planner what
    ``image_count`` images would get in the tool's automatic budget, less the classifier's measured
    opening time (graph and weights), at that speed.

    The estimate leaves out what only a real run measures (the first pass's one gradient per image,
    reading and writing), so the 100-image run's own plan lines are the figures to trust.
    """
    from ..attacks.directory import affordable_gradients
    from ..attacks.plan import MAX_COPIES, NON_TARGETED_FAMILY, choose_plan, cost_per_image
    from ..attacks.sign_gradient import METHODS, sign_gradient_attack
    from ..jobs.time_budget import auto_budget_seconds
    from ..models.classifier import Classifier

    family = METHODS[NON_TARGETED_FAMILY]
    config = replace(family, iterations=1, copies=MAX_COPIES[family.copy_transform.split("+")[0]])
    pixels, labels = _gradient_inputs(batch_size)
    opening = time.perf_counter()
    with Classifier.create(list(members)) as model:
        start_up_seconds = time.perf_counter() - opening

        def step() -> None:
            sign_gradient_attack(model, pixels, 16.0, labels=labels, targeted=False, config=config)

        step()
        best = min(_timed(step) for _ in range(repeats))
    gradients = batch_size * cost_per_image(config)
    label = f"{_list_text(members)} {NON_TARGETED_FAMILY} step, {config.copies} copies, batch {batch_size}"
    affordable = affordable_gradients(auto_budget_seconds(image_count) - start_up_seconds, image_count, 0.0, best / gradients)
    plan = choose_plan(targeted=False, gradients_per_image=affordable)
    return PlanThroughput(Throughput(label, gradients / best, best), start_up_seconds, plan.description, plan.reason)


def _gradient_inputs(batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.random.default_rng(0).integers(0, 256, size=(batch_size, 299, 299, 3), dtype=np.uint8)
    return pixels, np.arange(1, batch_size + 1) % 1000 + 1


def _gradient_step(model, pixels: np.ndarray, labels: np.ndarray):
    """The attack's step on ``model`` (cross-entropy gradient w.r.t. the pixels), compiled and run once to warm up."""
    from ..attacks.losses import cross_entropy

    gradient_of = model.gradient_function(cross_entropy)
    gradient_of(pixels, labels)
    return lambda: gradient_of(pixels, labels)


def _list_text(members: "Sequence[Member]") -> str:
    return ",".join(member.model if member.weight == 1 else f"{member.model}:{member.weight!r}" for member in members)


@dataclass(frozen=True)
class AttackRunTime:
    seconds: float
    budget_messages: tuple[str, ...]
    """The tool's time-budget warnings: where it ran fewer iterations than configured."""
    plan_messages: tuple[str, ...] = ()
    """The tool's plan lines: the recipe it chose, and each revision."""
    time_messages: tuple[str, ...] = ()
    """The tool's ``time:`` lines (--verbose): start-up, each pass's attack and I/O seconds, the total."""

    @property
    def gradient_seconds(self) -> float:
        """Seconds the run spent computing gradients, over all its passes (the ``attack N s`` of its time lines)."""
        return sum(float(seconds) for line in self.time_messages for seconds in re.findall(r"\(attack ([\d.]+) s", line))

    @property
    def budget_seconds(self) -> float | None:
        """The tool's own budget, from its last time line (None when it ran without one)."""
        found = [float(value) for line in self.time_messages for value in re.findall(r"of the ([\d.]+) s budget", line)]
        return found[-1] if found else None


def attack_wall_time(
    model_name: str,
    checkpoint: str,
    *,
    images_dir: Path | None,
    count: int = 100,
    eps: float = 16,
    precision: str = "auto",
    time_budget: str = "auto",
) -> AttackRunTime:
    """Wall time of ``nips-attack INPUT OUTPUT eps`` with default settings on ``count`` images, as a user runs it.

    ``model_name`` and ``checkpoint`` are the tool's ``--model`` and ``--checkpoint`` (lists for an ensemble)."""
    with tempfile.TemporaryDirectory(prefix="nips_adv_bench_") as scratch:
        input_dir, output_dir = Path(scratch) / "input", Path(scratch) / "output"
        input_dir.mkdir()
        sources = list_png_files(images_dir)[:count] if images_dir else []
        rng = np.random.default_rng(0)
        for index in range(count):
            pixels = read_png(sources[index % len(sources)]) if sources else rng.integers(0, 256, (299, 299, 3), dtype=np.uint8)
            write_png(pixels, input_dir / f"IMG{index:04d}.png")
        command = [
            os.path.join(os.path.dirname(sys.executable), "nips-attack"),
            str(input_dir), str(output_dir), f"{eps:g}",
            "--model", model_name, "--checkpoint", str(checkpoint), "--precision", precision,
            "--time-budget", time_budget, "--quiet", "--verbose",
        ]
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if completed.returncode != 0:
            raise RuntimeError(f"nips-attack exited with {completed.returncode}: {completed.stderr.strip()[-2000:]}")
        if len(list_png_files(output_dir)) != count:
            raise RuntimeError(f"nips-attack wrote {len(list_png_files(output_dir))} of {count} images")
        lines = completed.stderr.splitlines()

        def told(kind: str) -> tuple[str, ...]:
            prefix = f"nips-attack: {kind}"
            return tuple(line.removeprefix("nips-attack: ") for line in lines if line.startswith(prefix))

        return AttackRunTime(
            elapsed,
            tuple(line for line in told("warning:") if "time budget" in line),
            tuple(line.removeprefix("info: ") for line in told("info: plan")),
            tuple(line.removeprefix("debug: ") for line in told("debug: time:")),
        )


def cleverhans_mi_fgsm_throughput(batch_size: int = 16, iterations: int = 10) -> Throughput | None:
    """Image-iterations per second of cleverhans 4.0's TF2 MI-FGSM on Keras' InceptionV3 (random weights),
    measured now, on this machine; None when cleverhans is not installed (``pip install 'nips_adv[peers]'``).

    The peer of ``gradient_throughput``: one iteration is one image-gradient. Random weights:
    speed does not depend on them. MI-FGSM: Dong et al. 2018, arXiv:1710.06081.
    """
    try:
        from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
    except ImportError:
        return None
    import tensorflow as tf

    model = tf.keras.applications.InceptionV3(weights=None)
    images = tf.constant(np.random.default_rng(0).uniform(-1, 1, size=(batch_size, 299, 299, 3)).astype(np.float32))

    def attack() -> None:
        momentum_iterative_method(model, images, eps=16 / 127.5, eps_iter=1.6 / 127.5, nb_iter=iterations, clip_min=-1.0, clip_max=1.0)

    attack()
    seconds = _timed(attack)
    return Throughput(f"cleverhans MI-FGSM batch {batch_size}", batch_size * iterations / seconds, seconds)


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started
