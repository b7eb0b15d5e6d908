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

    @classmethod
    def starting_now(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> "TimeBudget":
        return cls(deadline=clock() + seconds, clock=clock)

    def record(self, *, images: int, iterations: int, attack_seconds: float, other_seconds: float) -> None:
        """Account for a finished batch: ``attack_seconds`` in the attack loop, ``other_seconds`` outside it."""
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
