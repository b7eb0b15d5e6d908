"""Fitting an attack into a wall-clock budget by running fewer iterations, never fewer images.

The contract kills an attack 500 s into each batch of 100 images, and a missing image scores
zero. An image attacked with fewer iterations still scores, so when the measured speed says the
configured iterations will not fit, later batches run fewer of them (the step stays eps /
iterations, so the whole epsilon is still used). The first batch runs as configured: it is the
measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..contract.constants import BATCH_IMAGES, BATCH_TIME_LIMIT_S

CONTRACT_SECONDS_PER_IMAGE = BATCH_TIME_LIMIT_S / BATCH_IMAGES
"""The evaluation's limit per image: 500 s per work piece of 100 images."""

AUTO_BUDGET_FRACTION = 0.9
"""``auto`` keeps 10% of the contract's time for the container's start and the model's restore."""


def auto_budget_seconds(image_count: int) -> float:
    """The default budget for ``image_count`` images: 90% of the contract's 5 s per image."""
    return AUTO_BUDGET_FRACTION * CONTRACT_SECONDS_PER_IMAGE * image_count


@dataclass
class TimeBudget:
    """Chooses each batch's iterations so that the remaining images finish by ``deadline``.

    Cost model, fitted on the batches done so far: an image costs ``overhead`` seconds (reading,
    writing, its share of the labels pass) plus ``per_gradient`` seconds per iteration.
    ``deadline`` is a value of ``clock`` (``time.monotonic`` by default).
    """

    deadline: float
    clock: Callable[[], float] = time.monotonic
    _gradient_seconds: float = field(default=0.0, init=False)
    _image_iterations: int = field(default=0, init=False)
    _other_seconds: float = field(default=0.0, init=False)
    _images: int = field(default=0, init=False)
    _assumed: bool = field(default=False, init=False)
    _records: int = field(default=0, init=False)
    _first_batch_seconds: float = field(default=0.0, init=False)
    _first_batch_iterations: int = field(default=0, init=False)

    @classmethod
    def starting_now(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> "TimeBudget":
        return cls(deadline=clock() + seconds, clock=clock)

    def record(self, *, images: int, iterations: int, attack_seconds: float, other_seconds: float) -> None:
        """Account for a finished batch: ``attack_seconds`` in the attack loop, ``other_seconds`` outside it.
        The first record replaces an ``assume``d estimate."""
        if self._assumed:
            self._gradient_seconds = self._other_seconds = 0.0
            self._image_iterations = self._images = 0
            self._assumed = False
        if self._records == 1:  # the second batch: the first one, which built the graph, leaves the rate
            self._first_batch_seconds = self._gradient_seconds
            self._first_batch_iterations = self._image_iterations
        self._records += 1
        self._gradient_seconds += attack_seconds
        self._image_iterations += images * iterations
        self._other_seconds += other_seconds
        self._images += images

    @property
    def measured(self) -> bool:
        return self._image_iterations > 0

    @property
    def seconds_per_image_iteration(self) -> float:
        return self._gradient_seconds / self._image_iterations if self._image_iterations else 0.0

    @property
    def images(self) -> int:
        """Images recorded so far."""
        return self._images

    @property
    def seconds_per_image_overhead(self) -> float:
        """Seconds per image outside the attack loop (reading, writing, labels), measured."""
        return self._other_seconds / self._images if self._images else 0.0

    def assume(self, *, seconds_per_image_iteration: float, seconds_per_image_overhead: float) -> None:
        """Start from an estimate (e.g. from an earlier pass) until a batch is recorded; it then counts as one image."""
        self._gradient_seconds, self._image_iterations = seconds_per_image_iteration, 1
        self._other_seconds, self._images = seconds_per_image_overhead, 1
        self._assumed = True

    def fits(self, *, iterations: int, images: int) -> bool:
        """Whether ``images`` more images of ``iterations`` each, at the measured speed, end by the deadline.
        Unmeasured: whether any time is left (the first batch is the measurement)."""
        seconds_left = self.seconds_left()
        if not self.measured:
            return seconds_left > 0
        needed = images * (self.seconds_per_image_overhead + iterations * self.seconds_per_image_iteration)
        return needed <= seconds_left

    @property
    def steady_seconds_per_image_iteration(self) -> float:
        """Like ``seconds_per_image_iteration`` but without the first batch once there are others: the
        first pays for building and warming up the graph, which a later pass of the same graph does not."""
        iterations = self._image_iterations - self._first_batch_iterations
        if self._records < 2 or iterations <= 0:
            return self.seconds_per_image_iteration
        return (self._gradient_seconds - self._first_batch_seconds) / iterations

    def seconds_left(self) -> float:
        return self.deadline - self.clock()

    def iterations_for(self, configured: int, images_left: int) -> int:
        """Iterations for the next batch: ``configured`` if it fits, else the most that does (at least 1)."""
        if not self.measured or images_left <= 0:
            return configured
        seconds_left = self.seconds_left()
        overhead = self._other_seconds / self._images
        affordable = (seconds_left / images_left - overhead) / self.seconds_per_image_iteration
        return max(1, min(configured, math.floor(affordable)))
