"""The default attack: the strongest recipe that fits the time budget on the machine it runs on.

An attack run is planned from measured speed, not assumed speed (the same defaults took ~70 s on
one machine and ~445 s on another for 100 images):

1. a cheap first pass writes a one-step (FGSM-like) adversarial image for every input, so every
   image is written however slow the machine, and measures seconds per image-gradient of the
   ensemble on this machine;
2. ``choose_plan`` turns the time left into image-gradients per image and picks the recipe
   (iterations, copies per step, loss, step) that spends them;
3. the refinement overwrites the images batch by batch; before each batch the plan is chosen again
   from the refinement's own measured speed (more copies when it runs faster than the first pass
   said, fewer iterations when slower), and when not one more step fits the refinement stops (the
   first pass's images stand).

The recipes were chosen by measurement (docs/attacks.md, "Choosing the default plan"): crafted on the
EfficientNet-Lite0 + Lite1 ensemble, scored on Lite2, checked on a second pairing (Lite1 + Lite2, scored
on Lite0), chosen on dev images 1-100 and reported on 101-200. The targeted recipe is Zhao et al.'s logit
loss; both run SGM's skip gradient on the surrogates (``SKIP_GRADIENT``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .sign_gradient import METHODS, SignGradientConfig
from .transforms import COPY_TRANSFORMS

NON_TARGETED_FAMILY = "bsr"
"""Non-targeted recipe: MI-FGSM with block shuffle and rotation copies (Wang et al. 2024), whose copies
per step grow with the budget. At 50 gradients per image and eps 4 it beat SI-NI-TI-DI on both
pairings (docs/attacks.md, "Choosing the default plan": 7 against 11 of 48, then 3 against 5 of 32)."""
SKIP_GRADIENT = 0.5
"""SGM's gamma (Wu et al. 2020) on every plan: the surrogates' residual branches pass half the gradient, at no
extra cost. Chosen on dev images 1-100 (docs/attacks.md): non-targeted, eps 4, bsr:copies=2, Lite0 + Lite1 ->
Lite2 accuracy 0.27 -> 0.19 (gamma 0.2/0.35/0.5/0.7: 0.26/0.20/0.19/0.19), Lite1 + Lite2 -> Lite0 0.31 -> 0.19;
targeted, eps 16, the logit loss for 60 iterations, hit rate on Lite2 0.86 -> 0.97, on Lite0 (crafted on Lite1 + Lite2)
0.73 -> 0.93."""
NON_TARGETED_ITERATIONS = 10
"""The transfer papers' 10 iterations; spare budget goes to more copies per step, not more steps."""
MAX_COPIES = {name: entry.plan_copies for name, entry in COPY_TRANSFORMS.items()}
"""Most copies per step worth paying for, from the copy-transform registry: SI's 6th scale is x/32,
grey; BSR/SIA's papers use 20."""
MAX_VARIANCE_SAMPLES = 20
"""VMI/VNI's N = 20 (Wang & He 2021): the most variance-tuning samples a plan adds."""
TARGETED_METHOD = "logit-ti-di-mi-fgsm"
"""Targeted recipe: Zhao et al.'s logit loss with DI + TI + MI, as many iterations (up to 300) as fit."""
TARGETED_MIN_LOGIT_ITERATIONS = 20
"""Below this, the targeted plan uses the cross-entropy with steps of 2.5 eps / iterations (the logit
loss needs many small steps; Zhao et al.'s curves rise over hundreds of iterations)."""


@dataclass(frozen=True)
class Plan:
    """A recipe and why it was chosen. ``config`` None: no refinement fits; the first pass stands."""

    config: SignGradientConfig | None
    description: str
    reason: str


def choose_plan(*, targeted: bool, gradients_per_image: float) -> Plan:
    """The strongest recipe costing at most ``gradients_per_image`` image-copy gradients per image.

    ``gradients_per_image``: what the time left affords each image (seconds per image for the
    refinement over measured seconds per image-gradient). The cost of a config is
    ``iterations * gradients_per_iteration``.
    """
    budget = math.floor(gradients_per_image)
    afford = f"{max(0.0, gradients_per_image):.0f} image-gradients per image fit"  # never "-0": time spent is not owed
    if budget < 1:
        return Plan(None, "first pass only (one step)", f"{afford}: not one more step; the one-step images stand")
    if targeted:
        base = METHODS[TARGETED_METHOD]
        iterations = min(base.iterations, budget)
        base = replace(base, skip_gradient=SKIP_GRADIENT)
        if iterations >= TARGETED_MIN_LOGIT_ITERATIONS:
            config = replace(base, iterations=iterations)
            return Plan(config, f"{TARGETED_METHOD}, {iterations} iterations of eps/8, skip gradient {SKIP_GRADIENT:g}",
                        f"{afford} (at most {base.iterations})")
        config = replace(base, iterations=iterations, loss="cross-entropy", step_fraction=None, step_scale=2.5)
        return Plan(config, f"ti-di-mi-fgsm, cross-entropy, {iterations} iterations of 2.5 eps/{iterations}, skip gradient {SKIP_GRADIENT:g}",
                    f"{afford}: under {TARGETED_MIN_LOGIT_ITERATIONS} for the logit loss")
    family = METHODS[NON_TARGETED_FAMILY]
    single = 1 + family.variance_samples  # gradients per copy and iteration
    per_copy_iteration = single * NON_TARGETED_ITERATIONS
    cap = MAX_COPIES[family.copy_transform.split("+")[0]]
    copies = min(cap, budget // per_copy_iteration)
    if copies >= 1:
        # Past the copies worth having, variance tuning (Wang & He 2021 combine it with SI-TI-DIM) takes the rest.
        samples = min(MAX_VARIANCE_SAMPLES, budget // (per_copy_iteration * copies) - 1) if copies == cap else 0
        config = replace(family, iterations=NON_TARGETED_ITERATIONS, copies=copies, variance_samples=samples,
                         skip_gradient=SKIP_GRADIENT)
        cost = config.iterations * config.gradients_per_iteration
        tuning = f" + variance tuning ({samples} samples)" if samples else ""
        return Plan(config, f"{NON_TARGETED_FAMILY}{tuning}, {copies} cop{'y' if copies == 1 else 'ies'} x {NON_TARGETED_ITERATIONS} iterations, "
                            f"skip gradient {SKIP_GRADIENT:g} "
                            f"({cost} gradients per image)", afford)
    iterations = max(1, min(NON_TARGETED_ITERATIONS, budget // single))
    config = replace(METHODS["ti-di-mi-fgsm"], iterations=iterations, skip_gradient=SKIP_GRADIENT)
    return Plan(config, f"ti-di-mi-fgsm, {iterations} iterations, skip gradient {SKIP_GRADIENT:g}", f"{afford}: too few for {NON_TARGETED_FAMILY}'s copies")


def first_pass_config(targeted: bool) -> SignGradientConfig:
    """The cheap pass that writes every image first: one step of eps (FGSM; toward the target when targeted)."""
    return METHODS["fgsm"]


def cost_per_image(config: SignGradientConfig) -> int:
    """Image-copy gradients one image costs under ``config``."""
    return config.iterations * config.gradients_per_iteration
