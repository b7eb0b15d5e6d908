"""Gradient rules of transfer attacks, in numpy: where to take the gradient and what to do with it.

Each rule is a small pure function (or a class holding only its settings) that works with any model
through a ``gradient_at(points) -> gradients`` callable: points and gradients ``(batch, h, w, 3)``
float32 in pixel units (0..255), the gradient of the loss the attack ascends. The loop combines them:

    point = nesterov_point(adversarial, momentum, step=step, decay=decay)        # NI, else adversarial
    gradient = gradient_at(point)
    tuned = gradient + variance                                                  # VMI/VNI, else + 0
    momentum = momentum_update(momentum, tuned, decay)                           # MI (TI smoothing first)
    variance = tuning.variance(gradient_at, adversarial, gradient, eps=eps, rng=rng)

Methods: momentum with L1 normalisation (MI-FGSM, Dong et al. 2018, arXiv 1710.06081), the Nesterov
look-ahead (NI-FGSM, Lin et al. 2020, arXiv 1908.06281), variance tuning (VMI-/VNI-FGSM, Wang & He
2021, arXiv 2103.15571). TI's Gaussian smoothing is ``sign_gradient.gaussian_smooth``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

GradientAt = Callable[[np.ndarray], np.ndarray]
"""``(batch, h, w, 3)`` float32 points (pixel units) -> the loss gradient there, same shape."""


def mean_abs(gradient: np.ndarray) -> np.ndarray:
    """Per-image mean |gradient|, ``(batch, 1, 1, 1)``, never 0 (a zero gradient stays zero when divided)."""
    per_image = np.mean(np.abs(gradient), axis=tuple(range(1, gradient.ndim)), keepdims=True)
    return np.maximum(per_image, np.finfo(np.float32).tiny)


def momentum_update(momentum: np.ndarray, gradient: np.ndarray, decay: float) -> np.ndarray:
    """MI-FGSM (Dong et al. 2018, arXiv 1710.06081): ``decay * momentum + gradient / mean|gradient|``.

    Per-image L1 normalisation keeps steps of different magnitude comparable in the sum (paper:
    decay mu = 1.0); with decay 0 the sign, hence I-FGSM, is unchanged. Returns a new array.
    """
    return (decay * momentum + gradient / mean_abs(gradient)).astype(np.float32)


def nesterov_point(
    adversarial: np.ndarray, momentum: np.ndarray, *, step: float, decay: float, direction: float = 1.0
) -> np.ndarray:
    """NI-FGSM's look-ahead (Lin et al. 2020, arXiv 1908.06281): ``x + direction * step * decay * g``,
    where g is the accumulated (L1-normalised) momentum and ``step`` alpha the step size in pixels;
    the gradient is taken there instead of at x. ``direction`` -1 for targeted attacks, which descend.
    Not clipped to the epsilon box, as in the paper."""
    return (adversarial + (direction * step * decay) * momentum).astype(np.float32)


@dataclass(frozen=True)
class VarianceTuning:
    """Variance tuning (Wang & He 2021, "Enhancing the Transferability of Adversarial Attacks through
    Variance Tuning", arXiv 2103.15571), for VMI-FGSM and VNI-FGSM.

    After each step's gradient g(x_t) (taken at the look-ahead point for VNI), the variance
    v = (1/N) sum_i grad J(x_t + r_i) - g(x_t), r_i uniform in +-``beta`` * eps per pixel
    (paper: N = 20 ``samples``, beta = 1.5), and the next step uses g(x_{t+1}) + v in the momentum.
    The samples are not clipped to 0..255, as in the paper. Costs N gradients per step.
    """

    samples: int = 20
    beta: float = 1.5

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"variance tuning needs at least 1 sample, got {self.samples}")
        if self.beta < 0:
            raise ValueError(f"variance tuning beta must be non-negative, got {self.beta}")

    def neighbours(self, points: np.ndarray, *, eps: float, rng: np.random.Generator) -> list[np.ndarray]:
        """The ``samples`` points ``points + r_i``, r_i uniform in +-beta * eps (float32)."""
        radius = self.beta * eps
        return [
            (points + rng.uniform(-radius, radius, size=points.shape)).astype(np.float32) for _ in range(self.samples)
        ]

    def variance(
        self,
        gradient_at: GradientAt,
        points: np.ndarray,
        current_gradient: np.ndarray,
        *,
        eps: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """v: the mean gradient over ``neighbours(points)`` minus ``current_gradient``, float32."""
        total = np.zeros(points.shape, np.float64)
        for neighbour in self.neighbours(points, eps=eps, rng=rng):
            total += gradient_at(neighbour)
        return (total / self.samples - current_gradient).astype(np.float32)
