"""Backward rules (SGM, LinBP, ghost networks) on a toy residual network whose gradient is known in closed form."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from nips_adv.attacks import method_spec_config
from nips_adv.attacks.sign_gradient import sign_gradient_attack
from nips_adv.models.classifier import Classifier, Network
from nips_adv.models.layers import BackwardRule, relu, residual_add
from nips_adv.models.networks import Architecture

SIDE = 4
INPUTS = SIDE * SIDE * 3
BRANCH_SCALE = 2.0


def _build_residual_logits(images, scope: str):
    """logits = flatten(x + relu(2 x)) @ W: one residual block whose branch is a ReLU at the last depth."""
    from nips_adv.models.tf_compat import tf, tf1

    with tf1.variable_scope(scope):
        weights = tf1.get_variable("weights", [INPUTS, 1000])
    block = residual_add(relu(BRANCH_SCALE * images, depth=1.0), images)
    return tf.matmul(tf.reshape(block, [-1, INPUTS]), weights)


def _build_linear_logits(images, scope: str):
    from nips_adv.models.tf_compat import tf, tf1

    with tf1.variable_scope(scope):
        weights = tf1.get_variable("weights", [INPUTS, 1000])
    return tf.matmul(tf.reshape(images, [-1, INPUTS]), weights)


def _architecture(name: str, build) -> Architecture:
    return Architecture(name=name, description=name, default_scope="Toy", num_classes=1000, image_size=SIDE,
                        preprocess=lambda pixels: pixels, build_logits=build)


def _first_logit(logits, labels, weights):
    from nips_adv.models.tf_compat import tf

    return tf.reduce_sum(logits[:, 0])


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory):
    from nips_adv.models.tf_compat import tf, tf1

    weights = np.random.default_rng(0).normal(0.0, 1.0, size=(INPUTS, 1000)).astype(np.float32)
    prefix = tmp_path_factory.mktemp("toy") / "toy.ckpt"
    graph = tf.Graph()
    with graph.as_default():
        variable = tf1.get_variable("Toy/weights", initializer=weights)
        with tf1.Session(graph=graph) as session:
            session.run(variable.initializer)
            tf1.train.Saver([variable]).save(session, str(prefix), write_meta_graph=False)
    return prefix, weights


@pytest.fixture(scope="module")
def residual(weights_file):
    prefix, weights = weights_file
    with Classifier([Network("toy_residual", _architecture("toy_residual", _build_residual_logits), prefix, "Toy")], seed=0) as classifier:
        yield classifier, weights


def _pixels() -> np.ndarray:
    return np.random.default_rng(1).uniform(-1.0, 1.0, size=(2, SIDE, SIDE, 3)).astype(np.float32)


def _expected(weights: np.ndarray, pixels: np.ndarray, branch_factor: np.ndarray) -> np.ndarray:
    """d logit_1 / dx = W[:, 0] * (1 + branch_factor), pixel by pixel."""
    return (weights[:, 0].reshape(SIDE, SIDE, 3)[None] * (1.0 + branch_factor)).astype(np.float32)


def test_without_a_rule_the_gradient_is_the_networks_own(residual) -> None:
    classifier, weights = residual
    pixels = _pixels()
    active = BRANCH_SCALE * (pixels > 0)
    for rule in (None, BackwardRule()):
        gradient = classifier.gradient_function(_first_logit, backward=rule)(pixels, np.array([1, 1]))
        np.testing.assert_allclose(gradient, _expected(weights, pixels, active), rtol=1e-5, atol=1e-5)


def test_skip_gradient_scales_the_branch_and_keeps_the_shortcut(residual) -> None:
    classifier, weights = residual
    pixels = _pixels()
    gradient = classifier.gradient_function(_first_logit, backward=BackwardRule(skip_gradient=0.25))(pixels, np.array([1, 1]))
    np.testing.assert_allclose(gradient, _expected(weights, pixels, 0.25 * BRANCH_SCALE * (pixels > 0)), rtol=1e-5, atol=1e-5)


def test_linear_backward_passes_the_gradient_through_inactive_relus(residual) -> None:
    classifier, weights = residual
    pixels = _pixels()
    linear = classifier.gradient_function(_first_logit, backward=BackwardRule(linear_backward=1.0))(pixels, np.array([1, 1]))
    np.testing.assert_allclose(linear, _expected(weights, pixels, np.full(pixels.shape, BRANCH_SCALE)), rtol=1e-5, atol=1e-5)
    both = BackwardRule(skip_gradient=0.5, linear_backward=1.0)
    combined = classifier.gradient_function(_first_logit, backward=both)(pixels, np.array([1, 1]))
    np.testing.assert_allclose(combined, _expected(weights, pixels, np.full(pixels.shape, 0.5 * BRANCH_SCALE)), rtol=1e-5, atol=1e-5)


def test_linear_backward_leaves_relus_before_its_share_alone() -> None:
    from nips_adv.models.layers import backward_rule
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default(), backward_rule(BackwardRule(linear_backward=0.5)) as in_use:
        inputs = tf.constant([-1.0, 2.0])
        early, late = relu(inputs, depth=0.25), relu(inputs, depth=0.75)
        gradients = tf.gradients(early, inputs)[0], tf.gradients(late, inputs)[0]
        with tf1.Session(graph=graph) as session:
            early_gradient, late_gradient, late_value = session.run([*gradients, late])
    np.testing.assert_array_equal(early_gradient, [0.0, 1.0])
    np.testing.assert_array_equal(late_gradient, [1.0, 1.0])
    np.testing.assert_array_equal(late_value, [0.0, 2.0])  # the forward value is the ReLU's
    assert in_use.applied == 1


def test_skip_erosion_draws_a_new_ghost_per_input_and_run_within_its_range(residual) -> None:
    classifier, weights = residual
    pixels = np.repeat(_pixels()[:1], 4, axis=0)
    gradient_of = classifier.gradient_function(_first_logit, backward=BackwardRule(skip_erosion=0.2))
    first, second = gradient_of(pixels, np.ones(4, int)), gradient_of(pixels, np.ones(4, int))
    # gradient = W * (lambda + 2 [x > 0]): lambda, one per input, recovered where the ReLU is off.
    off = (pixels[0] <= 0) & (np.abs(weights[:, 0].reshape(SIDE, SIDE, 3)) > 1e-3)
    scale = weights[:, 0].reshape(SIDE, SIDE, 3)
    lambdas = np.array([np.median(g[off] / scale[off]) for g in np.concatenate([first, second])])
    assert np.all((lambdas >= 0.8 - 1e-5) & (lambdas <= 1.2 + 1e-5)), lambdas
    assert len(np.unique(np.round(lambdas, 5))) == len(lambdas)  # every input of every run its own ghost
    # Predictions never see the ghost: the plain logits are the network's.
    expected_logits = (pixels[0] + np.maximum(BRANCH_SCALE * pixels[0], 0)).reshape(-1) @ weights
    np.testing.assert_allclose(classifier.logits(pixels[:1])[0], expected_logits, rtol=1e-4, atol=1e-3)


def test_a_network_without_residual_blocks_is_named_and_keeps_its_gradient(weights_file, caplog) -> None:
    prefix, weights = weights_file
    linear = Network("toy_linear", _architecture("toy_linear", _build_linear_logits), prefix, "Toy")
    with Classifier([linear]) as classifier, caplog.at_level(logging.WARNING, logger="nips_adv"):
        gradient = classifier.gradient_function(_first_logit, backward=BackwardRule(skip_gradient=0.5))(_pixels(), np.array([1, 1]))
    np.testing.assert_allclose(gradient[0], weights[:, 0].reshape(SIDE, SIDE, 3), rtol=1e-5)
    assert "toy_linear has no residual block or ReLU" in caplog.text


@pytest.mark.parametrize("setting", ["skip_gradient=0", "skip_gradient=1.5", "linear_backward=-0.1", "skip_erosion=1"])
def test_bad_backward_settings_are_refused_naming_the_setting(setting: str) -> None:
    with pytest.raises(ValueError, match=setting.split("=")[0]):
        method_spec_config(f"mi-fgsm:{setting}")


def test_an_attack_with_backward_rules_stays_within_eps(residual) -> None:
    classifier, _ = residual
    clean = np.random.default_rng(2).integers(0, 256, size=(2, SIDE, SIDE, 3), dtype=np.uint8)
    config = method_spec_config("mi-fgsm:skip_gradient=0.5,linear_backward=1,skip_erosion=0.2")
    adversarial = sign_gradient_attack(classifier, clean, 4.0, labels=np.array([1, 2]), targeted=False, config=config)
    assert adversarial.dtype == np.uint8
    assert np.abs(adversarial.astype(int) - clean).max() <= 4
    assert np.any(adversarial != clean)
