"""Expectation over transformation: the gradient of a randomised defense, averaged over its passes.

Athalye, Engstrom, Ilyas & Kwok 2018 (arXiv 1707.07397); used against randomised defenses in
Athalye, Carlini & Wagner 2018 (arXiv 1802.00420). Inside one graph, a transform with C copies
already gives the sum of its C per-copy gradients (the loss sums over the copy-major rows); this
helper averages over separate runs when C copies at once do not fit, or to reach more passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def expectation_over_transformation(
    gradient: Callable[..., np.ndarray], *args: Any, passes: int, **kwargs: Any
) -> np.ndarray:
    """The mean of ``passes`` calls of ``gradient(*args, **kwargs)``, each one random pass.

    ``gradient`` is, e.g., a classifier's ``gradient_function(loss, transform)``; each call draws
    the transform's randomness afresh. Summed in float64, returned as float32 of the same shape.
    """
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    total = None
    for _ in range(passes):
        value = np.asarray(gradient(*args, **kwargs), dtype=np.float64)
        total = value if total is None else total + value
    return (total / passes).astype(np.float32)
