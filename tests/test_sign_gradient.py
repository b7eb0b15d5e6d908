"""The sign-gradient loop against a numpy model whose gradients the test controls."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from nips_adv.attacks.sign_gradient import (
    METHODS,
    TARGETED_ITERATIONS,
    SignGradientConfig,
    gaussian_kernel_1d,
    gaussian_smooth,
    method_config,
    sign_gradient_attack,
)
from nips_adv.contract.epsilon import max_perturbation


class ScriptedModel:
    """Returns the scripted gradients in turn, and records what it was asked (the loss and transform by name)."""

    def __init__(self, gradients: list[np.ndarray]) -> None:
        self.gradients = gradients
        self.calls: list[dict] = []
        self.logits_calls = 0

    def logits(self, pixels):
        """Label 17 first, 18 second, equally likely; the rest far behind."""
        self.logits_calls += 1
        logits = np.full((len(pixels), 1000), -50.0, np.float32)
        logits[:, 16] = logits[:, 17] = 0.0
        return logits

    def gradient_function(self, loss, transform=None, *, backward=None):
        def gradient_of(pixels, labels, weights=None):
            self.calls.append(
                {"pixels": pixels.copy(), "labels": np.asarray(labels).copy(), "weights": np.asarray(weights).copy(),
                 "loss": loss.__name__, "transform": transform}
            )
            return self.gradients[(len(self.calls) - 1) % len(self.gradients)]

        return gradient_of


def _clean(shape=(2, 6, 5, 3), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_fgsm_is_one_step_of_eps_along_the_gradient_sign() -> None:
    clean = _clean()
    gradient = np.random.default_rng(1).normal(size=clean.shape).astype(np.float32)
    model = ScriptedModel([gradient])
    adversarial = sign_gradient_attack(model, clean, 8, labels=np.array([1, 2]), targeted=False, config=METHODS["fgsm"])
    expected = np.clip(clean.astype(np.int32) + 8 * np.sign(gradient).astype(np.int32), 0, 255)
    assert np.array_equal(adversarial, expected)
    assert len(model.calls) == 1


def test_targeted_descends_the_loss_toward_the_target() -> None:
    clean = np.full((1, 2, 2, 3), 100, np.uint8)
    gradient = np.ones(clean.shape, np.float32)
    model = ScriptedModel([gradient])
    adversarial = sign_gradient_attack(model, clean, 4, labels=np.array([7]), targeted=True, config=METHODS["fgsm"])
    assert np.all(adversarial == 96)
    assert model.calls[0]["labels"].tolist() == [[7]] and model.calls[0]["weights"].tolist() == [[1.0]]


def _reference_mi_fgsm(clean, gradients, eps, iterations, decay):
    """Dong et al.'s update written out directly: g = mu g + grad / ||grad||_1 (per image), x += a sign(g)."""
    x = clean.astype(np.float64)
    lower, upper = np.maximum(x - eps, 0), np.minimum(x + eps, 255)
    g = np.zeros_like(x)
    alpha = eps / iterations
    for step in range(iterations):
        grad = gradients[step % len(gradients)].astype(np.float64)
        norm = np.abs(grad).reshape(len(grad), -1).mean(axis=1).reshape(-1, 1, 1, 1)
        g = decay * g + grad / norm
        x = np.clip(x + alpha * np.sign(g), lower, upper)
    return np.rint(x).astype(np.uint8)


def test_momentum_matches_the_published_update() -> None:
    clean = _clean(seed=3)
    rng = np.random.default_rng(4)
    # The second image's gradients differ in scale by 1000x: L1 normalisation must make that irrelevant.
    gradients = [rng.normal(size=clean.shape).astype(np.float32) * np.array([1, 1000]).reshape(2, 1, 1, 1) for _ in range(3)]
    config = SignGradientConfig(iterations=5, decay=1.0)
    adversarial = sign_gradient_attack(ScriptedModel(gradients), clean, 10, labels=np.array([1, 1]), targeted=False, config=config)
    assert np.array_equal(adversarial, _reference_mi_fgsm(clean, gradients, 10, 5, 1.0))


class BoundCase(NamedTuple):
    method: str
    eps: float


@pytest.mark.parametrize("case", [BoundCase(method, eps) for method in METHODS for eps in (0, 1, 4, 7.5, 16, 255)])
def test_every_method_respects_the_bound(case: BoundCase) -> None:
    clean = _clean(shape=(2, 9, 9, 3), seed=5)
    clean[0, 0, 0] = [0, 255, 0]
    gradients = [np.random.default_rng(seed).normal(size=clean.shape).astype(np.float32) for seed in range(3)]
    config = method_config(case.method, step_size=3.3)
    adversarial = sign_gradient_attack(ScriptedModel(gradients), clean, case.eps, labels=np.array([1, 2]), targeted=False, config=config)
    assert adversarial.dtype == np.uint8 and adversarial.shape == clean.shape
    assert max_perturbation(adversarial, clean) <= case.eps
    if case.eps == 0:
        assert np.array_equal(adversarial, clean)


def test_own_classes_are_taken_once_on_the_clean_batch_and_kept() -> None:
    clean = _clean()
    for method in ("i-fgsm", "di-mi-fgsm"):
        model = ScriptedModel([np.ones(clean.shape, np.float32)])
        sign_gradient_attack(model, clean, 4, labels=None, targeted=False, config=method_config(method, own_classes=3))
        assert model.logits_calls == 1
        assert all(call["labels"].tolist() == [[17, 18, 1]] * 2 for call in model.calls)  # ties keep label order
        # Renormalised probabilities over the top 3: the third is e^-50 of the first.
        assert all(np.allclose(call["weights"], [[0.5, 0.5, 0.0]] * 2, atol=1e-12) for call in model.calls)


def test_a_targeted_attack_without_targets_is_refused() -> None:
    clean = _clean()
    with pytest.raises(ValueError, match="needs labels"):
        sign_gradient_attack(ScriptedModel([np.ones(clean.shape, np.float32)]), clean, 4, labels=None, targeted=True,
                             config=METHODS["mi-fgsm"])


def test_input_diversity_is_the_transform_of_every_gradient() -> None:
    from nips_adv.attacks.transforms import InputDiversity

    clean = _clean()
    model = ScriptedModel([np.ones(clean.shape, np.float32)])
    sign_gradient_attack(model, clean, 4, labels=np.array([1, 1]), targeted=False, config=METHODS["di-mi-fgsm"])
    assert [call["transform"] for call in model.calls] == [InputDiversity(probability=0.5)] * 10
    plain = ScriptedModel([np.ones(clean.shape, np.float32)])
    sign_gradient_attack(plain, clean, 4, labels=np.array([1, 1]), targeted=False, config=METHODS["mi-fgsm"])
    assert {call["transform"] for call in plain.calls} == {None}


def test_translation_invariance_equals_a_2d_gaussian_convolution() -> None:
    gradient = np.random.default_rng(6).normal(size=(2, 11, 9, 3)).astype(np.float32)
    size, sigmas = 5, 3.0
    kernel_1d = gaussian_kernel_1d(size, sigmas)
    kernel = np.outer(kernel_1d, kernel_1d)
    assert kernel.sum() == pytest.approx(1.0)
    padded = np.pad(gradient, [(0, 0), (2, 2), (2, 2), (0, 0)])
    expected = np.zeros_like(gradient)
    for row in range(size):
        for column in range(size):
            expected += kernel[row, column] * padded[:, row : row + 11, column : column + 9]
    np.testing.assert_allclose(gaussian_smooth(gradient, size, sigmas), expected, rtol=1e-5, atol=1e-6)


def test_method_overrides_and_validation() -> None:
    assert method_config("mi-fgsm", iterations=20).iterations == 20
    assert method_config("mi-fgsm", iterations=None).iterations == 10
    assert method_config("fgsm").iterations == 1
    with pytest.raises(ValueError, match="loss must be one of cross-entropy, margin, logit, got 'hinge'"):
        method_config("mi-fgsm", loss="hinge")


def test_targeted_presets_take_more_and_longer_steps() -> None:
    targeted = method_config("di-mi-fgsm", targeted=True)
    assert (targeted.iterations, targeted.step_scale, targeted.loss, targeted.diversity_prob) == (
        TARGETED_ITERATIONS, 2.5, "cross-entropy", 0.5)
    fgsm = method_config("fgsm", targeted=True)
    assert (fgsm.iterations, fgsm.step_scale) == (1, 1.0)
    assert method_config("mi-fgsm", targeted=True, iterations=5).iterations == 5  # options still win
    with pytest.raises(ValueError, match="step scale"):
        SignGradientConfig(step_scale=0)


def test_a_longer_step_reaches_the_bound_and_stays_within_it() -> None:
    clean = np.full((1, 2, 2, 3), 100, np.uint8)
    up, down = np.ones(clean.shape, np.float32), -np.ones(clean.shape, np.float32)
    # One sign flip in five steps: steps of eps / iterations (1.6) end at 4.8; steps of 4 reach 8 and stay.
    for scale, expected in ((1.0, 105), (2.5, 108)):
        model = ScriptedModel([up, up, down, up, up])
        adversarial = sign_gradient_attack(model, clean, 8, labels=np.array([1]), targeted=False,
                                           config=method_config("i-fgsm", iterations=5, step_scale=scale))
        assert np.all(adversarial == expected), scale


def test_the_configured_loss_reaches_every_gradient() -> None:
    clean = _clean()
    model = ScriptedModel([np.ones(clean.shape, np.float32)])
    sign_gradient_attack(model, clean, 4, labels=np.array([3, 4]), targeted=True,
                         config=method_config("mi-fgsm", targeted=True, iterations=3, loss="margin"))
    assert [call["loss"] for call in model.calls] == ["margin"] * 3
    assert model.logits_calls == 0  # targets given: no forward pass for own classes


class SizedModel(ScriptedModel):
    """A ScriptedModel whose networks see ``input_side`` x ``input_side``."""

    def __init__(self, gradients: list[np.ndarray], input_side: int) -> None:
        super().__init__(gradients)
        self.input_side = input_side


def test_an_image_far_larger_than_the_input_is_attacked_at_the_input_size() -> None:
    clean = _clean((1, 50, 40, 3))
    gradient = np.ones((1, 8, 8, 3), np.float32)  # brighten everything, seen at 8x8
    model = SizedModel([gradient], input_side=8)
    adversarial = sign_gradient_attack(model, clean, 6, labels=None, targeted=False, config=METHODS["mi-fgsm"])
    assert {call["pixels"].shape for call in model.calls} == {(1, 8, 8, 3)}
    assert adversarial.shape == clean.shape and adversarial.dtype == np.uint8
    assert max_perturbation(adversarial, clean) <= 6
    moved = adversarial.astype(int) - clean
    assert (moved[clean < 200] > 0).mean() > 0.95  # the enlarged perturbation keeps the gradient's sign


def test_an_image_up_to_twice_the_input_side_is_attacked_at_its_own_size() -> None:
    clean = _clean((1, 16, 12, 3))
    model = SizedModel([np.ones(clean.shape, np.float32)], input_side=8)
    sign_gradient_attack(model, clean, 6, labels=np.array([1]), targeted=False, config=METHODS["fgsm"])
    assert model.calls[0]["pixels"].shape == clean.shape


def test_shared_channels_move_r_g_and_b_together() -> None:
    clean = np.full((1, 6, 5, 3), 100, np.uint8)
    gradient = np.random.default_rng(4).normal(size=clean.shape).astype(np.float32)
    model = ScriptedModel([gradient])
    config = SignGradientConfig(iterations=3, shared_channels=True)
    moved = sign_gradient_attack(model, clean, 8, labels=np.array([1]), targeted=False, config=config).astype(int) - clean
    assert np.array_equal(moved[..., 0], moved[..., 1]) and np.array_equal(moved[..., 1], moved[..., 2])
    assert np.array_equal(np.sign(moved[..., 0]), np.sign(gradient.mean(axis=3)))  # the channels' mean gradient decides
    with pytest.raises(ValueError, match="shared_channels must be true or false"):
        SignGradientConfig(shared_channels="yes")  # type: ignore[arg-type]
