"""Proportions the competition reports (accuracy left, target hit rate) and their confidence intervals."""

from __future__ import annotations


def wilson_interval(successes: int, count: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% with the default ``z``) of the proportion ``successes / count``; (0, 1) for no count."""
    if count <= 0:
        return 0.0, 1.0
    rate = successes / count
    centre = (rate + z * z / (2 * count)) / (1 + z * z / count)
    half = z / (1 + z * z / count) * (rate * (1 - rate) / count + z * z / (4 * count * count)) ** 0.5
    return max(0.0, centre - half), min(1.0, centre + half)
