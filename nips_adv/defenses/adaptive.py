"""What an attacker who has read the defense would try: perturbations the router cannot see.

The routed default sorts images by the noise their smoothest parts show (``noise_level``). A reader
of that code has two cheap dodges, both in ``scripts/defense_arena.py``:

- ``luminance_only``: keep an attack's luminance change and restore the clean image's colour, so the
  colour differences stay those of the photograph (the arena's "chroma removed" attack);
- ``LevelEvadingModel``: any attack that leaves alone the smoothest parts of the image, where the
  router reads its level, and perturbs the textured rest at full eps.

A white-box attack through the defense itself is any sign-gradient attack given a
``DefendedClassifier`` (EOT over its random passes, BPDA through JPEG and bit depth).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..contract.epsilon import project_to_epsilon_box
from .noise_level import LUMA, colour_magnitude, colour_noise_level, luminance_magnitude, luminance_noise_level

UNTOUCHED_FRACTION = 0.3
"""``LevelEvadingModel``'s default: three times the share of positions the level's percentile reads."""


def luminance_only(clean: np.ndarray, adversarial: np.ndarray, eps: float) -> np.ndarray:
    """``adversarial`` (uint8, like ``clean``) with its chroma removed: each pixel moves by its luminance
    change alone, the same for R, G and B, rounded inside the eps box of ``clean``."""
    change = (np.asarray(adversarial, np.float64) - np.asarray(clean, np.float64)) @ LUMA
    return project_to_epsilon_box((np.asarray(clean, np.float64) + change[..., None]).astype(np.float32), clean, eps)


def noise_levels(pixels: np.ndarray) -> np.ndarray:
    """``(B, 2)``: each image's colour noise level (the one a routed recipe reads) and luminance noise level."""
    return np.stack([colour_noise_level(pixels), luminance_noise_level(pixels)], axis=1)


def smoothest_pixels(pixels: np.ndarray, fraction: float) -> np.ndarray:
    """``(B, H, W)`` bool: each image's pixels within one pixel of its smoothest ``fraction`` of positions by
    the noise levels' own measures (the larger of the colour and luminance magnitudes): where the levels
    are read, and every pixel the filter there touches."""
    images = np.asarray(pixels, np.float64)
    if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:3]) < 3:
        raise ValueError(f"expected pixels of shape (B, H, W, 3) with sides of at least 3, got {images.shape}")
    magnitude = np.maximum(colour_magnitude(images), luminance_magnitude(images))
    threshold = np.percentile(magnitude.reshape(len(images), -1), 100 * fraction, axis=1)
    held = magnitude <= threshold[:, None, None]
    height, width = held.shape[1:]
    mask = np.zeros(images.shape[:3], bool)
    for row in range(3):  # each filtered position covers the 3 x 3 pixels around it
        for column in range(3):
            mask[:, row : row + height, column : column + width] |= held
    return mask


class LevelEvadingModel:
    """A model whose attack gradients leave untouched the pixels a router reads its level on.

    The level is a low percentile of filtered magnitudes, read on an image's smoothest parts; an attacker
    who has read that code confines his perturbation to the rest: each gradient is zero on
    ``smoothest_pixels(pixels, untouched)``, the hard form of a penalty on the level (a sign step of zero
    moves nothing). The textured parts take the whole perturbation, at full eps and in colour. Everything
    else (logits, ``input_side``) is the wrapped model's.
    """

    def __init__(self, model: Any, *, untouched: float = UNTOUCHED_FRACTION) -> None:
        if not (0 < untouched < 1):
            raise ValueError(f"the untouched fraction must be between 0 and 1, got {untouched!r}")
        self.model = model
        self.untouched = float(untouched)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def gradient_function(self, loss: Callable[..., Any], transform: Any = None, *, backward: Any = None) -> Callable[..., np.ndarray]:
        gradient_of = self.model.gradient_function(loss, transform, backward=backward)

        def evading(pixels: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
            gradient = np.array(gradient_of(pixels, labels, weights), np.float32)
            gradient[smoothest_pixels(pixels, self.untouched)] = 0.0
            return gradient

        return evading
