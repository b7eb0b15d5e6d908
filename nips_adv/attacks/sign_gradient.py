"""The one sign-gradient loop: every attack method is a choice of loss, input transform and gradient rule.

Each step takes the gradient of a loss (``losses.py``) on the fused logits of the model, through an
input transform the classifier compiles in front of its networks (``transforms.py``: DI, SI, Admix,
BSR, SIA and their compositions, several copies per step), at a point chosen by the gradient rule
(``gradient_rules.py``: the Nesterov look-ahead), then tunes it (variance tuning), smooths it (TI)
and accumulates it (momentum over L1-normalised gradients), and moves by a signed step. Methods:

- FGSM (Goodfellow et al. 2015, arXiv 1412.6572), I-FGSM (Kurakin et al. 2017, arXiv 1607.02533);
- MI-FGSM (Dong et al. 2018, arXiv 1710.06081: 10 iterations, decay 1.0);
- DI (Xie et al. 2019, arXiv 1803.06978: p = 0.5), TI (Dong et al. 2019, arXiv 1904.02884: 7x7 here;
  the paper's 15x15 is for its defended models);
- SI-NI-FGSM (Lin et al. 2020, arXiv 1908.06281: 5 scales, decay 1.0, 10 iterations);
- VMI-/VNI-FGSM (Wang & He 2021, arXiv 2103.15571: N = 20 samples, beta = 1.5, 10 iterations);
- Admix (Wang et al. 2021, arXiv 2102.00436: 3 mixes x 5 scales, eta 0.2, on MI-FGSM);
- BSR (Wang et al. 2024, arXiv 2308.10299: 2x2 blocks, 24 degrees, 20 copies, on MI-FGSM);
- SIA (Wang et al. 2023, arXiv 2309.14700: 3x3 blocks, 20 copies, on MI-FGSM);
- backward rules, on any method (``models.layers.BackwardRule``): SGM (Wu et al. 2020, arXiv
  2002.05990: the residual branches' gradient times gamma), LinBP (Guo et al. 2020, arXiv 2012.03528:
  ReLUs linear in the backward pass), ghost networks (Li et al. 2020, arXiv 1812.03413: shortcut erosion);
- the targeted logit loss (Zhao, Liu & Larson 2021, arXiv 2012.11207: DI + TI (5x5) + MI, 300
  iterations of 2/255 at eps 16/255).

Pixel units (0..255) throughout, the units of MAX_EPSILON; the model maps pixels to its range in its graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..contract.epsilon import epsilon_box, project_to_epsilon_box
from ..contract.images import resize_pixels
from ..models.layers import BackwardRule
from .gradient_rules import VarianceTuning, momentum_update, nesterov_point
from .losses import LOSSES, get_loss, own_labels
from .transforms import COPY_TRANSFORMS, DEFAULT_DIVERSITY_SCALE, InputDiversity, compose

DEFAULT_CHUNK_IMAGES = 64
"""At most this many image-copies go through the networks in one ``session.run``: a batch of 16 with
BSR's 20 copies is 320 network inputs, several GiB of activations; the loop splits the batch instead
(the gradient is a sum over images, so the split changes nothing but the random draws)."""


class GradientModel(Protocol):
    """What the loop needs of a model (``nips_adv.models.classifier.Classifier`` is one)."""

    def logits(self, pixels: np.ndarray) -> np.ndarray: ...

    def gradient_function(
        self, loss: Callable[..., Any], transform: Any = None, *, backward: Any = None
    ) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]: ...


@dataclass(frozen=True)
class SignGradientConfig:
    """Hyperparameters of the sign-gradient family (pixel units).

    - ``iterations``: gradient steps; 1 with ``step_size`` = eps is FGSM.
    - ``step_size``: pixels per step; None means ``step_fraction`` * eps when that is set, else
      ``step_scale`` * eps / iterations.
    - ``step_scale``: with 1 the steps add up to eps exactly (the budget is reachable, not exceeded);
      more lets the iterate reach the bound early and go on moving along it.
    - ``step_fraction``: a step of this fraction of eps whatever the iterations (Zhao et al.'s 2/255
      at 16/255 is 1/8), for long runs whose iterations the time budget may cut.
    - ``decay``: momentum factor mu of MI-FGSM (Dong et al. 2018); 0 gives I-FGSM.
    - ``nesterov``: take each gradient at NI-FGSM's look-ahead point (Lin et al. 2020).
    - ``variance_samples``: VMI/VNI's N neighbours per step (Wang & He 2021); 0 is off. Each costs
      one more gradient per step. ``variance_beta``: their radius, times eps.
    - ``copy_transform``: '' or names of ``COPY_TRANSFORMS`` joined by '+' (``"si"``, ``"admix"``,
      ``"bsr"``, ``"sia"``), each with its paper's settings; DI, when on, is applied to every copy.
    - ``copies``: overrides the copies of ``copy_transform``: BSR's and SIA's copies, SI's scales,
      Admix's mixes (each of 5 scales). None: the paper's.
    - ``diversity_prob``: probability of the DI transform per step (Xie et al. 2019); 0 is off.
    - ``diversity_scale``: DI pads to this multiple of the model's input side.
    - ``ti_kernel_size``: side of the TI Gaussian kernel (Dong et al. 2019); 0 is off.
    - ``ti_sigmas``: the kernel spans +-``ti_sigmas`` standard deviations, as in the TI paper's code.
    - ``shared_channels``: one perturbation for R, G and B (each step's gradient averaged over the
      channels before its sign): a brightness change without colour noise, which a defense that
      detects attacks by their colour noise does not see (docs/defenses.md).
    - ``skip_gradient``, ``linear_backward``, ``skip_erosion``: how each gradient runs back through the
      surrogates' residual blocks and ReLUs (``BackwardRule``: SGM's gamma, LinBP's share of linear
      blocks, ghost networks' shortcut erosion); 1, 0, 0 are off. They cost no extra gradient.
    - ``own_classes``: non-targeted attacks without labels move away from the model's top
      ``own_classes`` classes on the clean image, each weighted by its probability (the
      expected cross-entropy under the model's own belief). On a confident image that is the
      usual loss of its prediction; on an unsure one it also pushes down the runners-up, among
      which the true class usually is, instead of pushing the image onto it. 1: the prediction alone.
    - ``loss``: a name of ``LOSSES`` (cross-entropy, margin, logit). Non-targeted attacks ascend it,
      targeted ones descend it.
    - ``chunk_images``: at most this many image-copies per ``session.run`` (memory bound).
    """

    iterations: int = 10
    step_size: float | None = None
    step_scale: float = 1.0
    step_fraction: float | None = None
    decay: float = 1.0
    nesterov: bool = False
    variance_samples: int = 0
    variance_beta: float = 1.5
    copy_transform: str = ""
    copies: int | None = None
    diversity_prob: float = 0.0
    diversity_scale: float = DEFAULT_DIVERSITY_SCALE
    ti_kernel_size: int = 0
    ti_sigmas: float = 3.0
    shared_channels: bool = False
    skip_gradient: float = 1.0
    linear_backward: float = 0.0
    skip_erosion: float = 0.0
    own_classes: int = 5
    loss: str = "cross-entropy"
    chunk_images: int = DEFAULT_CHUNK_IMAGES

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"step size must be positive, got {self.step_size}")
        if self.step_scale <= 0:
            raise ValueError(f"step scale must be positive, got {self.step_scale}")
        if self.step_fraction is not None and self.step_fraction <= 0:
            raise ValueError(f"step fraction must be positive, got {self.step_fraction}")
        if self.decay < 0:
            raise ValueError(f"decay must be non-negative, got {self.decay}")
        if self.variance_samples < 0:
            raise ValueError(f"variance samples must be non-negative, got {self.variance_samples}")
        if self.variance_beta < 0:
            raise ValueError(f"variance beta must be non-negative, got {self.variance_beta}")
        names = [name for name in self.copy_transform.split("+") if name] if self.copy_transform else []
        unknown = [name for name in names if name not in COPY_TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown copy transform {self.copy_transform!r}; known: {', '.join(COPY_TRANSFORMS)} (join with '+')")
        if self.copies is not None and self.copies < 1:
            raise ValueError(f"copies must be at least 1, got {self.copies}")
        if self.copies is not None and not names:
            raise ValueError("copies need a copy transform (si, admix, bsr or sia)")
        if not 0.0 <= self.diversity_prob <= 1.0:
            raise ValueError(f"diversity probability must be in [0, 1], got {self.diversity_prob}")
        if self.diversity_scale < 1.0:
            raise ValueError(f"diversity scale must be at least 1, got {self.diversity_scale}")
        if self.ti_kernel_size < 0 or (self.ti_kernel_size and self.ti_kernel_size % 2 == 0):
            raise ValueError(f"TI kernel size must be 0 (off) or odd, got {self.ti_kernel_size}")
        if not isinstance(self.shared_channels, bool):
            raise ValueError(f"shared_channels must be true or false, got {self.shared_channels!r}")
        self.backward_rule  # BackwardRule checks its own settings
        if not 1 <= self.own_classes <= 1000:
            raise ValueError(f"own classes must be 1..1000, got {self.own_classes}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.chunk_images < 1:
            raise ValueError(f"chunk images must be at least 1, got {self.chunk_images}")
        if self.copies is not None and self.copies_per_gradient > self.chunk_images:
            # The copies of one image go through the networks together: past the chunk, memory has no bound.
            largest = self.chunk_images * self.copies // self.copies_per_gradient
            raise ValueError(f"copies {self.copies}: one image's copies must fit in one run through the networks "
                             f"({self.chunk_images} network inputs); the largest that fits is {largest}")

    @property
    def transform(self) -> Any:
        """The input transform each gradient sees: the copy transforms, then DI on every copy; None for none."""
        parts = [COPY_TRANSFORMS[name].make(self.copies) for name in self.copy_transform.split("+") if name]
        if self.diversity_prob > 0:
            parts.append(InputDiversity(probability=self.diversity_prob, scale=self.diversity_scale))
        return compose(*parts) if parts else None

    @property
    def backward_rule(self) -> BackwardRule | None:
        """The backward rule of the surrogates' gradient; None when every part of it is off."""
        rule = BackwardRule(self.skip_gradient, self.linear_backward, self.skip_erosion)
        return None if rule.is_identity else rule

    @property
    def copies_per_gradient(self) -> int:
        """Network inputs per image per gradient: the transform's copies (1 without one)."""
        transform = self.transform
        return 1 if transform is None else int(transform.copies)

    @property
    def gradients_per_iteration(self) -> int:
        """Image-copy gradients per image per iteration: the copies, times 1 + the VMI samples."""
        return self.copies_per_gradient * (1 + self.variance_samples)

    def step_for(self, eps: float) -> float:
        """Pixels per step at ``eps``."""
        if self.step_size is not None:
            return self.step_size
        if self.step_fraction is not None:
            return self.step_fraction * eps
        return self.step_scale * eps / self.iterations


@dataclass(frozen=True)
class Method:
    """One entry of the method registry: the preset, one line on what it is, its paper."""

    config: SignGradientConfig
    summary: str
    paper: str


METHOD_REGISTRY: dict[str, Method] = {
    # One step from the clean image, where the belief-weighted loss also pushes the runners-up down:
    # FGSM transfers better away from the prediction alone (crafted on EfficientNet-Lite0, 200 dev
    # images: Lite1/Lite2 accuracy 0.46/0.46 with 1 class, 0.485/0.49 with 5).
    "fgsm": Method(SignGradientConfig(iterations=1, decay=0.0, own_classes=1), "one step of the whole eps",
                   "Goodfellow et al. 2015, arXiv 1412.6572"),
    "i-fgsm": Method(SignGradientConfig(iterations=10, decay=0.0), "iterative, 10 steps of eps/10", "Kurakin et al. 2017, arXiv 1607.02533"),
    "mi-fgsm": Method(SignGradientConfig(iterations=10, decay=1.0), "with momentum (decay 1.0)", "Dong et al. 2018, arXiv 1710.06081"),
    "di-mi-fgsm": Method(SignGradientConfig(iterations=10, decay=1.0, diversity_prob=0.5), "MI-FGSM with input diversity (p 0.5)",
                         "Xie et al. 2019, arXiv 1803.06978"),
    "ti-di-mi-fgsm": Method(SignGradientConfig(iterations=10, decay=1.0, diversity_prob=0.5, ti_kernel_size=7),
                            "DI-MI-FGSM with translation invariance (7x7 kernel)", "Dong et al. 2019, arXiv 1904.02884"),
    "ni-fgsm": Method(SignGradientConfig(iterations=10, decay=1.0, nesterov=True), "MI-FGSM at the Nesterov look-ahead",
                      "Lin et al. 2020, arXiv 1908.06281"),
    "si-ni-fgsm": Method(SignGradientConfig(iterations=10, decay=1.0, nesterov=True, copy_transform="si"), "NI-FGSM on 5 scale copies",
                         "Lin et al. 2020, arXiv 1908.06281"),
    "si-ni-ti-di-fgsm": Method(
        SignGradientConfig(iterations=10, decay=1.0, nesterov=True, copy_transform="si", diversity_prob=0.5, ti_kernel_size=7),
        "SI-NI-FGSM with DI and TI", "Lin et al. 2020, arXiv 1908.06281",
    ),
    "vmi-fgsm": Method(SignGradientConfig(iterations=10, decay=1.0, variance_samples=20), "MI-FGSM with variance tuning (20 samples)",
                       "Wang & He 2021, arXiv 2103.15571"),
    "vni-fgsm": Method(SignGradientConfig(iterations=10, decay=1.0, nesterov=True, variance_samples=20), "NI-FGSM with variance tuning",
                       "Wang & He 2021, arXiv 2103.15571"),
    "admix": Method(SignGradientConfig(iterations=10, decay=1.0, copy_transform="admix"), "MI-FGSM on 3 mixes x 5 scales",
                    "Wang et al. 2021, arXiv 2102.00436"),
    "bsr": Method(SignGradientConfig(iterations=10, decay=1.0, copy_transform="bsr"), "MI-FGSM on 20 block-shuffled, rotated copies",
                  "Wang et al. 2024, arXiv 2308.10299"),
    "sia": Method(SignGradientConfig(iterations=10, decay=1.0, copy_transform="sia"), "MI-FGSM on 20 block-transformed copies",
                  "Wang et al. 2023, arXiv 2309.14700"),
    "sgm": Method(SignGradientConfig(iterations=10, decay=1.0, skip_gradient=0.5),
                  "MI-FGSM, residual branches' gradient x 0.5 (skip gradient)", "Wu et al. 2020, arXiv 2002.05990"),
    "linbp": Method(SignGradientConfig(iterations=10, decay=1.0, linear_backward=0.5),
                    "MI-FGSM, the last half's ReLUs linear in the backward pass", "Guo et al. 2020, arXiv 2012.03528"),
    "ghost": Method(SignGradientConfig(iterations=10, decay=1.0, skip_erosion=0.22),
                    "MI-FGSM on a new ghost network per step (shortcuts x U[0.78, 1.22])", "Li et al. 2020, arXiv 1812.03413"),
    "logit-ti-di-mi-fgsm": Method(
        SignGradientConfig(iterations=300, decay=1.0, diversity_prob=0.5, ti_kernel_size=5, loss="logit", step_fraction=1 / 8),
        "the logit loss, DI, TI (5x5), 300 steps of eps/8 (targeted transfer)", "Zhao et al. 2021, arXiv 2012.11207",
    ),
}
"""Every attack method, one entry each: the loop runs its config, the CLI lists it, docs/attacks.md's table
is ``method_table()``. A new method is one entry here (and its tests)."""

METHODS: dict[str, SignGradientConfig] = {name: method.config for name, method in METHOD_REGISTRY.items()}
"""Named presets, as non-targeted attacks run them; ``method_config`` adapts them to targeted ones."""


def method_table() -> str:
    """The methods as the Markdown table of docs/attacks.md (a test keeps the two equal)."""
    rows = [f"| `{name}` | {method.summary} | {method.paper} |" for name, method in METHOD_REGISTRY.items()]
    return "\n".join(["| Method | What it is | Paper |", "|---|---|---|", *rows])

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
    unless it is FGSM's single one or sets its own step fraction, as the logit loss's 300 steps do),
    then the non-None ``overrides``. Raises ValueError for an unknown method or a bad override."""
    try:
        config = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}") from None
    if targeted and config.iterations > 1 and config.step_fraction is None:
        config = replace(config, iterations=TARGETED_ITERATIONS, step_scale=TARGETED_STEP_SCALE)
    return replace(config, **{key: value for key, value in overrides.items() if value is not None})


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``method[:field=value,...]`` -> (method, overrides of SignGradientConfig's fields), e.g.
    ``bsr:copies=5,iterations=20``; values parse as bool, int, float or stay text. Raises ValueError
    naming the spec for an unknown method or field."""
    method, _, rest = spec.partition(":")
    method = method.strip()
    if method not in METHODS:
        raise ValueError(f"{spec!r}: unknown method {method!r}; known methods: {', '.join(METHODS)}")
    known = {field.name for field in fields(SignGradientConfig)}
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, _, text = item.partition("=")
        if key not in known:
            raise ValueError(f"{spec!r}: {key!r} is not a setting; settings: {', '.join(sorted(known - {'chunk_images'}))}")
        overrides[key] = _spec_value(text)
    return method, overrides


def method_spec_config(spec: str, *, targeted: bool = False) -> SignGradientConfig:
    """The config a ``method[:field=value,...]`` spec names (``parse_method_spec``, then ``method_config``)."""
    method, overrides = parse_method_spec(spec)
    return method_config(method, targeted=targeted, **overrides)


def _spec_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class AttackInterrupted(Exception):
    """``stop`` said so before an iteration: the batch's attack was cut short and has no result."""


def sign_gradient_attack(
    model: GradientModel,
    clean: np.ndarray,
    eps: float,
    *,
    labels: np.ndarray | None,
    targeted: bool,
    config: SignGradientConfig,
    seed: int | None = 0,
    stop: Callable[[], bool] | None = None,
    label_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Attack a batch and return the adversarial images, uint8, within eps of ``clean``.

    ``clean`` is ``(batch, height, width, 3)`` uint8; ``labels`` ``(batch,)`` ints 1..1000: the
    class to move away from or toward (targeted: the loss toward it is descended, a sign flip and
    nothing else). None (non-targeted only) means the model's own top ``config.own_classes``
    classes on ``clean``, weighted by its probabilities (one forward pass), which avoids label leaking.
    ``seed`` seeds the numpy draws (VMI's neighbours); the transforms draw from the graph's seed.
    ``stop`` is asked before every iteration: True raises AttackInterrupted (a time budget's deadline).
    ``label_weights``: the weight of each of ``labels``' columns (``own_labels`` gives both, so a caller can
    look them up outside the attack's own clock); default ones.

    Images more than ``LARGE_IMAGE_FACTOR`` times larger than the model's input (``model.input_side``,
    when it has one) are attacked at that input size and their perturbation enlarged to theirs
    (``attack_at_input_size``): time and memory follow what the networks see, not the image.
    """
    input_side = attack_side(model, clean)
    if input_side is not None:
        return attack_at_input_size(
            lambda small: sign_gradient_attack(model, small, eps, labels=labels, targeted=targeted, config=config, seed=seed,
                                               stop=stop, label_weights=label_weights),
            clean, eps, int(input_side),
        )
    lower, upper = epsilon_box(clean, eps)
    if labels is None and targeted:
        raise ValueError("a targeted attack needs labels: the target classes")
    if eps == 0:
        return clean.copy()
    if labels is None:
        labels, weights = own_labels(model.logits(clean), config.own_classes)
    else:
        labels = np.asarray(labels).reshape(len(clean), -1)
        weights = np.ones(labels.shape, np.float32) if label_weights is None else np.asarray(label_weights, np.float32).reshape(labels.shape)
    gradient_at = chunked_gradient(
        model.gradient_function(get_loss(config.loss), config.transform, backward=config.backward_rule),
        labels,
        weights,
        images_per_run(config, clean.shape[1:3]),
    )
    rng = np.random.default_rng(seed)
    tuning = VarianceTuning(config.variance_samples, config.variance_beta) if config.variance_samples else None
    adversarial = clean.astype(np.float32)
    step = config.step_for(eps)
    direction = -1.0 if targeted else 1.0
    momentum = np.zeros_like(adversarial)
    variance = np.zeros_like(adversarial)
    for _ in range(config.iterations):
        if stop is not None and stop():
            raise AttackInterrupted
        point = (
            nesterov_point(adversarial, momentum, step=step, decay=config.decay, direction=direction)
            if config.nesterov
            else adversarial
        )
        gradient = gradient_at(point)
        tuned = gradient + variance if tuning is not None else gradient
        if config.ti_kernel_size:
            tuned = gaussian_smooth(tuned, config.ti_kernel_size, config.ti_sigmas)
        if config.shared_channels:
            tuned = np.repeat(tuned.mean(axis=3, keepdims=True), tuned.shape[3], axis=3)
        momentum = momentum_update(momentum, tuned, config.decay)
        if tuning is not None:
            variance = tuning.variance(gradient_at, adversarial, gradient, eps=eps, rng=rng)
        adversarial += (direction * step) * np.sign(momentum)
        np.clip(adversarial, lower, upper, out=adversarial)
    return project_to_epsilon_box(adversarial, clean, eps)


LARGE_IMAGE_FACTOR = 2
"""An image whose longer side exceeds this many times the model's input side is attacked at the input size;
smaller ones (the contract's 299x299 on any of the catalogue's networks) at their own."""


def attack_side(model: GradientModel, pixels: np.ndarray) -> int | None:
    """The side ``pixels`` (B, H, W, 3) are attacked at: None for their own, the model's input side when
    their longer side exceeds ``LARGE_IMAGE_FACTOR`` times it."""
    side = getattr(model, "input_side", None)
    return int(side) if side and max(pixels.shape[1:3]) > LARGE_IMAGE_FACTOR * side else None


def shrunk_for_attack(model: GradientModel, pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as the attack sees them (``attack_side``): the model's own classes are read on these."""
    side = attack_side(model, pixels)
    return pixels if side is None else _shrunk(pixels, side)


def _shrunk(pixels: np.ndarray, side: int) -> np.ndarray:
    """``pixels`` (B, H, W, 3) resized to ``side`` x ``side`` each, with the organisers' filter (``resize_pixels``)."""
    return np.stack([resize_pixels(image, (side, side)) for image in pixels])


def attack_at_input_size(attack: Callable[[np.ndarray], np.ndarray], clean: np.ndarray, eps: float, side: int) -> np.ndarray:
    """``attack`` run on ``clean`` shrunk to ``side`` x ``side`` (bicubic, as the defense shrinks), its
    perturbation enlarged back (bilinear: each value a convex mix of values within eps) and added to ``clean``."""
    small = _shrunk(clean, side)
    perturbation = attack(small).astype(np.float32) - small
    height, width = clean.shape[1:3]
    enlarged = np.stack([
        np.stack([
            np.asarray(Image.fromarray(np.ascontiguousarray(channel), mode="F").resize((width, height), resample=Image.Resampling.BILINEAR))
            for channel in np.moveaxis(image, 2, 0)
        ], axis=2)
        for image in perturbation
    ])
    return project_to_epsilon_box(clean + enlarged, clean, eps)


CHUNK_REFERENCE_PIXELS = 299 * 299
"""``chunk_images`` counts image-copies of this size; larger images go through in proportionally fewer."""


def images_per_run(config: SignGradientConfig, size: tuple[int, int]) -> int:
    """Images per ``session.run``: ``config.chunk_images`` image-copies of 299x299, scaled down for larger
    images (at least one image: a larger one still runs, alone)."""
    pixels = max(1, int(size[0]) * int(size[1]))
    return max(1, config.chunk_images * CHUNK_REFERENCE_PIXELS // (pixels * config.copies_per_gradient))


def chunked_gradient(
    gradient_of: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    labels: np.ndarray,
    weights: np.ndarray,
    images_per_run: int,
) -> Callable[[np.ndarray], np.ndarray]:
    """``points (batch, h, w, 3) -> gradient`` through ``gradient_of``, ``images_per_run`` images per call
    (so copies x images per ``session.run`` stay bounded); labels and weights are split alike."""

    def gradient_at(points: np.ndarray) -> np.ndarray:
        if len(points) <= images_per_run:
            return gradient_of(points, labels, weights)
        parts = [
            gradient_of(points[start : start + images_per_run], labels[start : start + images_per_run], weights[start : start + images_per_run])
            for start in range(0, len(points), images_per_run)
        ]
        return np.concatenate(parts, axis=0)

    return gradient_at


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
