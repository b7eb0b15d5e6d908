"""How much pixel-scale colour noise an image carries: the measure a routed recipe sorts images by.

Dev images are photographs that went through JPEG, whose 4:2:0 chroma subsampling leaves their
colour differences (R-G, B-G) smooth from one pixel to the next; an eps-bounded attack perturbs each
channel on its own and fills them with pixel-scale noise. The level is the 10th percentile, over the
pixels, of |L(R-G)| + |L(B-G)|, L the 3 x 3 Laplacian-like kernel of Immerkaer's noise estimator
(Immerkaer 1996, "Fast noise variance estimation"): the low percentile reads the noise floor of an
image's smoothest parts and ignores its textured ones. Measured on the dev images (README, "Routing
by noise level"): clean photographs mostly 0-4, attacks crafted at eps 4 at least 3, at eps 16 at
least 8. An attacker who perturbs all three channels alike stays below it; ``luminance_noise_level``
reads the same floor in the luminance, where such a perturbation shows (scripts/defense_arena.py
reports it; clean dev images 1-100: 0-7, median 0.8; BSR at eps 16 with one perturbation for R, G and B at
least 3: docs/defenses.md).
"""

from __future__ import annotations

import numpy as np

_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
PERCENTILE = 10.0
LUMA = np.array([0.299, 0.587, 0.114])
"""ITU-R BT.601 luminance weights of R, G and B (those of JPEG's YCbCr)."""


def colour_noise_level(pixels: np.ndarray) -> np.ndarray:
    """``(B,)`` float64: the colour-noise level of each image in ``pixels`` ``(B, H, W, 3)`` 0..255.

    Images narrower than the kernel are first extended by repeating their edge pixels.
    """
    images = _checked(pixels)
    return np.percentile(colour_magnitude(images).reshape(len(images), -1), PERCENTILE, axis=1)


def luminance_noise_level(pixels: np.ndarray) -> np.ndarray:
    """``(B,)`` float64: the same noise floor read in each image's luminance (``LUMA``), where a perturbation
    shared by R, G and B shows though its colour differences stay those of the photograph."""
    images = _checked(pixels)
    return np.percentile(luminance_magnitude(images).reshape(len(images), -1), PERCENTILE, axis=1)


def colour_magnitude(images: np.ndarray) -> np.ndarray:
    """|L(R-G)| + |L(B-G)| at each valid position of ``images`` ``(B, H, W, 3)``, ``(B, H-2, W-2)``: what the
    colour level is a percentile of."""
    green = images[..., 1]
    return np.abs(filtered(images[..., 0] - green)) + np.abs(filtered(images[..., 2] - green))


def luminance_magnitude(images: np.ndarray) -> np.ndarray:
    """|L(luminance)| at each valid position, ``(B, H-2, W-2)``: what the luminance level is a percentile of."""
    return np.abs(filtered(images @ LUMA))


def _checked(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as float64 ``(B, H, W, 3)``, images narrower than the kernel extended by their edge pixels."""
    images = np.asarray(pixels, dtype=np.float64)
    if images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape[:3]:
        raise ValueError(f"expected pixels of shape (B, H, W, 3), got {images.shape}")
    short = [max(0, 3 - side) for side in images.shape[1:3]]
    if any(short):
        images = np.pad(images, [(0, 0), (0, short[0]), (0, short[1]), (0, 0)], mode="edge")
    return images


def filtered(channel: np.ndarray) -> np.ndarray:
    """``channel`` ``(B, H, W)`` filtered by the estimator's kernel over the valid positions, ``(B, H-2, W-2)``."""
    height, width = channel.shape[1] - 2, channel.shape[2] - 2
    total = np.zeros((len(channel), height, width))
    for row in range(3):
        for column in range(3):
            total += _KERNEL[row, column] * channel[:, row : row + height, column : column + width]
    return total
