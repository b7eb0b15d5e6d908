"""The epsilon box: the only place that decides which pixel values may be written."""

from __future__ import annotations

import math

import numpy as np

from .constants import MAX_EPSILON


def validate_epsilon(value: float | str) -> float:
    """Return ``value`` as a float if it is a usable MAX_EPSILON (0..255 pixel units), else raise ValueError."""
    try:
        eps = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon {value!r} is not a number") from None
    if not math.isfinite(eps) or eps < 0 or eps > MAX_EPSILON:
        raise ValueError(f"epsilon {value!r} is outside 0..{MAX_EPSILON} (pixel units)")
    return eps


def epsilon_box(clean: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer-valued bounds (float32, same shape as ``clean``) of every admissible output pixel.

    ``clean`` is uint8 0..255. The bounds are ``ceil(clean - eps)`` and ``floor(clean + eps)``
    intersected with [0, 255], so any integer in them satisfies |adv - clean| <= eps exactly,
    for integer and non-integer eps alike.
    """
    eps = validate_epsilon(eps)
    values = np.arange(256, dtype=np.float64)  # the bounds of each of the 256 clean values, looked up per pixel
    lower = np.clip(np.ceil(values - eps), 0, 255).astype(np.float32)
    upper = np.clip(np.floor(values + eps), 0, 255).astype(np.float32)
    index = np.asarray(clean).astype(np.uint8, copy=False)
    return lower[index], upper[index]


def project_to_epsilon_box(adversarial: np.ndarray, clean: np.ndarray, eps: float) -> np.ndarray:
    """Round ``adversarial`` (float pixels 0..255, any shape) to uint8 inside the epsilon box of ``clean``.

    Rounding happens before clipping against integer bounds, so the written image never
    exceeds eps; NaN pixels fall back to the clean value.
    """
    if adversarial.shape != clean.shape:
        raise ValueError(f"adversarial shape {adversarial.shape} differs from clean shape {clean.shape}")
    lower, upper = epsilon_box(clean, eps)
    rounded = np.rint(np.asarray(adversarial, dtype=np.float32))
    missing = np.isnan(rounded)
    if missing.any():
        rounded[missing] = np.asarray(clean, dtype=np.float32)[missing]
    np.clip(rounded, lower, upper, out=rounded)
    return rounded.astype(np.uint8)


def max_perturbation(adversarial: np.ndarray, clean: np.ndarray) -> int:
    """Largest |adversarial - clean| over all pixels, in pixel units (both uint8)."""
    return int(np.max(np.abs(adversarial.astype(np.int16) - clean.astype(np.int16)), initial=0))
