"""The Python API: numpy in and out, the tools' own calls underneath, the eps bound after uint8 rounding."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nips_adv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Three smooth 96x96 images (a network's resize path included) with some texture."""
    rng = np.random.default_rng(3)
    grid = np.linspace(0, 1, 96)[None, :, None, None] * np.linspace(0, 1, 96)[None, None, :, None]
    base = 255 * grid * rng.uniform(0.3, 1.0, size=(3, 1, 1, 3))
    return np.clip(base + rng.normal(0, 12, size=(3, 96, 96, 3)), 0, 255).astype(np.uint8)


def test_importing_the_package_leaves_tensorflow_unloaded() -> None:
    code = "import sys, nips_adv; nips_adv.attack; nips_adv.METHODS; print('tensorflow' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "False"


def test_the_top_level_names_are_the_librarys_own_objects() -> None:
    from nips_adv.attacks.sign_gradient import sign_gradient_attack
    from nips_adv.defenses.recipes import DefendedClassifier
    from nips_adv.models.classifier import Classifier

    assert nips_adv.Classifier is Classifier and nips_adv.DefendedClassifier is DefendedClassifier
    assert nips_adv.sign_gradient_attack is sign_gradient_attack
    assert all(getattr(nips_adv, name).__doc__ for name in nips_adv.__all__ if name not in ("__version__", "METHODS"))
    with pytest.raises(AttributeError, match="no attribute 'attak'"):
        nips_adv.attak  # noqa: B018


def test_a_pinned_attack_keeps_shape_and_eps_and_moves_the_prediction(photos: np.ndarray) -> None:
    clean = nips_adv.classify(photos, defense="plain")
    adversarial = nips_adv.attack(photos, eps=8, method="i-fgsm", iterations=4)
    assert adversarial.dtype == np.uint8 and adversarial.shape == photos.shape
    assert np.abs(adversarial.astype(int) - photos).max() == 8  # the whole eps, never more
    assert (nips_adv.classify(adversarial, defense="plain") != clean).any()
    single = nips_adv.attack(photos[0], eps=2.5, method="fgsm")
    assert single.shape == photos[0].shape and np.abs(single.astype(int) - photos[0]).max() <= 2


@pytest.mark.slow
def test_a_targeted_attack_goes_toward_its_targets(photos: np.ndarray) -> None:
    targets = [10, 20, 30]
    adversarial = nips_adv.attack(photos, eps=32, method="i-fgsm", iterations=20, targets=targets)
    assert np.abs(adversarial.astype(int) - photos).max() <= 32
    assert (nips_adv.classify(adversarial, defense="plain") == targets).sum() >= 2


@pytest.mark.slow
def test_the_default_plan_fits_its_seconds(photos: np.ndarray) -> None:
    import time

    started = time.monotonic()
    adversarial = nips_adv.attack(photos, eps=4, seconds=20)
    assert np.abs(adversarial.astype(int) - photos).max() <= 4 and adversarial.shape == photos.shape
    assert time.monotonic() - started < 60  # the budget, model load and a graph compile


def test_classify_through_a_recipe(photos: np.ndarray) -> None:
    labels = nips_adv.classify(photos, model="efficientnet_lite0", defense="crops", passes=1)
    assert labels.shape == (3,) and ((1 <= labels) & (labels <= 1000)).all()
    assert isinstance(nips_adv.classify(photos[0], defense="plain"), int)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda images: nips_adv.attack(images.astype(np.float32)), "must be uint8"),
        (lambda images: nips_adv.attack(images[..., :2]), r"\(N, H, W, 3\)"),
        (lambda images: nips_adv.attack(images, eps=300), "outside 0..255"),
        (lambda images: nips_adv.attack(images, targets=[1]), "3 labels in 1..1000"),
        (lambda images: nips_adv.attack(images, targets=[0, 1, 2]), "3 labels in 1..1000"),
        (lambda images: nips_adv.attack(images, iterations=3), "give a method"),
        (lambda images: nips_adv.attack(images, method="pgd"), "pgd"),
        (lambda images: nips_adv.classify(images, defense="blur"), "blur"),
    ],
)
def test_bad_arguments_are_named_before_any_model_loads(photos: np.ndarray, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(photos)


@pytest.mark.e2e
def test_every_python_block_of_the_readme_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "the README shows the Python API"
    for block in blocks:
        ran = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert ran.returncode == 0, ran.stderr[-2000:]
