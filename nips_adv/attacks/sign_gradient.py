"""The one sign-gradient loop: FGSM, I-FGSM, MI-FGSM, with input diversity (DI) and translation invariance (TI).

Variants differ only in how each gradient is obtained (the loss, and DI: a random resize-and-pad
transform the classifier compiles in front of its networks) and transformed (TI: Gaussian
smoothing; momentum over L1-normalised gradients). The loop chooses the loss and the transform
(``losses.py``, ``transforms.py``); the model only differentiates them. It works in pixel units
(0..255), the units of MAX_EPSILON, so epsilon needs no conversion; the model maps pixels to its
own range inside its graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from ..contract.epsilon import epsilon_box, project_to_epsilon_box
from .losses import LOSSES, get_loss, own_labels
from .transforms import DEFAULT_DIVERSITY_SCALE, InputDiversity


class GradientModel(Protocol):
    """What the loop needs of a model (``nips_adv.models.classifier.Classifier`` is one)."""

    def logits(self, pixels: np.ndarray) -> np.ndarray: ...

    def gradient_function(
        self, loss: Callable[..., Any], transform: Any = None
    ) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]: ...


@dataclass(frozen=True)
class SignGradientConfig:
    """Hyperparameters of the sign-gradient family (pixel units).

    - ``iterations``: gradient steps; 1 with ``step_size`` = eps is FGSM.
    - ``step_size``: pixels per step; None means ``step_scale`` * eps / iterations.
    - ``step_scale``: with 1 the steps add up to eps exactly (the budget is reachable, not exceeded);
      more lets the iterate reach the bound early and go on moving along it.
    - ``decay``: momentum factor mu of MI-FGSM (Dong et al. 2018); 0 gives I-FGSM.
    - ``diversity_prob``: probability of the DI transform per step (Xie et al. 2019); 0 is off.
    - ``diversity_scale``: DI pads to this multiple of the model's input side.
    - ``ti_kernel_size``: side of the TI Gaussian kernel (Dong et al. 2019); 0 is off.
    - ``ti_sigmas``: the kernel spans +-``ti_sigmas`` standard deviations, as in the TI paper's code.
    - ``own_classes``: non-targeted attacks without labels move away from the model's top
      ``own_classes`` classes on the clean image, each weighted by its probability (the
      expected cross-entropy under the model's own belief). On a confident image that is the
      usual loss of its prediction; on an unsure one it also pushes down the runners-up, among
      which the true class usually is, instead of pushing the image onto it. 1: the prediction alone.
    - ``loss``: ``cross-entropy`` or ``margin`` (the best rival logit minus the label's; see
      ``nips_adv.attacks.losses``). Non-targeted attacks ascend it, targeted ones descend it.
    """

    iterations: int = 10
    step_size: float | None = None
    step_scale: float = 1.0
    decay: float = 1.0
    diversity_prob: float = 0.0
    diversity_scale: float = DEFAULT_DIVERSITY_SCALE
    ti_kernel_size: int = 0
    ti_sigmas: float = 3.0
    own_classes: int = 5
    loss: str = "cross-entropy"

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"step size must be positive, got {self.step_size}")
        if self.step_scale <= 0:
            raise ValueError(f"step scale must be positive, got {self.step_scale}")
        if self.decay < 0:
            raise ValueError(f"decay must be non-negative, got {self.decay}")
        if not 0.0 <= self.diversity_prob <= 1.0:
            raise ValueError(f"diversity probability must be in [0, 1], got {self.diversity_prob}")
        if self.diversity_scale < 1.0:
            raise ValueError(f"diversity scale must be at least 1, got {self.diversity_scale}")
        if self.ti_kernel_size < 0 or (self.ti_kernel_size and self.ti_kernel_size % 2 == 0):
            raise ValueError(f"TI kernel size must be 0 (off) or odd, got {self.ti_kernel_size}")
        if not 1 <= self.own_classes <= 1000:
            raise ValueError(f"own classes must be 1..1000, got {self.own_classes}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")

    @property
    def transform(self) -> InputDiversity | None:
        """The input transform each gradient sees: DI when ``diversity_prob`` > 0, else none."""
        if self.diversity_prob <= 0:
            return None
        return InputDiversity(probability=self.diversity_prob, scale=self.diversity_scale)


METHODS: dict[str, SignGradientConfig] = {
    # One step from the clean image, where the belief-weighted loss also pushes the runners-up down:
    # FGSM transfers better away from the prediction alone (crafted on EfficientNet-Lite0, 200 dev
    # images: Lite1/Lite2 accuracy 0.46/0.46 with 1 class, 0.485/0.49 with 5).
    "fgsm": SignGradientConfig(iterations=1, decay=0.0, own_classes=1),
    "i-fgsm": SignGradientConfig(iterations=10, decay=0.0),
    "mi-fgsm": SignGradientConfig(iterations=10, decay=1.0),
    "di-mi-fgsm": SignGradientConfig(iterations=10, decay=1.0, diversity_prob=0.5),
    "ti-di-mi-fgsm": SignGradientConfig(iterations=10, decay=1.0, diversity_prob=0.5, ti_kernel_size=7),
}
"""Named presets, as non-targeted attacks run them; ``method_config`` adapts them to targeted ones."""

TARGETED_ITERATIONS = 20
"""Iterative presets take more steps when targeted: reaching one given class takes longer than leaving one."""
TARGETED_STEP_SCALE = 2.5
"""Targeted steps of 2.5 eps / iterations (Madry et al.'s rule; 2 pixels at eps 16 and 20 iterations).
Toward a target the gradient's signs keep changing, so with steps of eps / iterations most pixels
end well inside the bound: crafted on EfficientNet-Lite0 over the 200 dev images, 24% of the pixel
values reached +-16 (mean |change| 9.9); with 2.5, 65% (12.9), and the target was hit on 14 and 4
images of Lite1 and Lite2 instead of 12 and 1 (crafted on Lite1, first 100 images: 7 and 4 on Lite0
and Lite2 instead of 8 and 4). Non-targeted presets keep eps / iterations."""


def method_config(method: str, *, targeted: bool = False, **overrides: object) -> SignGradientConfig:
    """The preset ``method`` (for a targeted attack, TARGETED_ITERATIONS steps of TARGETED_STEP_SCALE
    unless it is FGSM's single one), then the non-None ``overrides``."""
    try:
        config = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}") from None
    if targeted and config.iterations > 1:
        config = replace(config, iterations=TARGETED_ITERATIONS, step_scale=TARGETED_STEP_SCALE)
    return replace(config, **{key: value for key, value in overrides.items() if value is not None})


def sign_gradient_attack(
    model: GradientModel,
    clean: np.ndarray,
    eps: float,
    *,
    labels: np.ndarray | None,
    targeted: bool,
    config: SignGradientConfig,
) -> np.ndarray:
    """Attack a batch and return the adversarial images, uint8, within eps of ``clean``.

    ``clean`` is ``(batch, height, width, 3)`` uint8; ``labels`` ``(batch,)`` ints 1..1000: the
    class to move away from or toward (targeted: the loss toward it is descended, a sign flip and
    nothing else). None (non-targeted only) means the model's own top ``config.own_classes``
    classes on ``clean``, weighted by its probabilities (one forward pass), which avoids label leaking.
    """
    lower, upper = epsilon_box(clean, eps)
    if labels is None and targeted:
        raise ValueError("a targeted attack needs labels: the target classes")
    if eps == 0:
        return clean.copy()
    if labels is None:
        labels, weights = own_labels(model.logits(clean), config.own_classes)
    else:
        labels = np.asarray(labels).reshape(len(clean), -1)
        weights = np.ones(labels.shape, np.float32)
    gradient_of = model.gradient_function(get_loss(config.loss), config.transform)
    adversarial = clean.astype(np.float32)
    step = config.step_size if config.step_size is not None else config.step_scale * eps / config.iterations
    direction_sign = -1.0 if targeted else 1.0
    momentum = np.zeros_like(adversarial)
    for _ in range(config.iterations):
        gradient = gradient_of(adversarial, labels, weights)
        if config.ti_kernel_size:
            gradient = gaussian_smooth(gradient, config.ti_kernel_size, config.ti_sigmas)
        # Per-image L1 normalisation keeps steps of different magnitude comparable in the momentum
        # sum; with decay 0 it leaves the sign, hence I-FGSM and FGSM, unchanged.
        momentum *= config.decay
        momentum += gradient / _mean_abs(gradient)
        adversarial += (direction_sign * step) * np.sign(momentum)
        np.clip(adversarial, lower, upper, out=adversarial)
    return project_to_epsilon_box(adversarial, clean, eps)


def _mean_abs(gradient: np.ndarray) -> np.ndarray:
    per_image = np.mean(np.abs(gradient), axis=tuple(range(1, gradient.ndim)), keepdims=True)
    return np.maximum(per_image, np.finfo(np.float32).tiny)


def gaussian_kernel_1d(size: int, sigmas: float) -> np.ndarray:
    """Normalised Gaussian weights over ``size`` points spanning +-``sigmas`` standard deviations."""
    positions = np.linspace(-sigmas, sigmas, size)
    weights = np.exp(-0.5 * positions**2)
    return (weights / weights.sum()).astype(np.float32)


def gaussian_smooth(gradient: np.ndarray, size: int, sigmas: float) -> np.ndarray:
    """TI: convolve each image and channel of ``(batch, h, w, c)`` with a ``size`` x ``size`` Gaussian.

    The 2-D kernel of the TI paper is the outer product of two 1-D Gaussians, so two 1-D
    passes give the same result; borders are zero-padded ('SAME' padding, as its code does).
    """
    kernel = gaussian_kernel_1d(size, sigmas)
    radius = size // 2
    smoothed = gradient
    for axis in (1, 2):
        padding = [(0, 0)] * gradient.ndim
        padding[axis] = (radius, radius)
        padded = np.pad(smoothed, padding)
        length = smoothed.shape[axis]
        smoothed = sum(
            weight * np.take(padded, np.arange(offset, offset + length), axis=axis)
            for offset, weight in enumerate(kernel)
        )
    return smoothed.astype(np.float32)
