"""The attack losses, compiled by the classifier on a linear toy model whose gradient is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from nips_adv.attacks.losses import cross_entropy, get_loss, margin, own_labels
from nips_adv.models.classifier import Classifier, Network
from nips_adv.models.networks import Architecture

SIDE = 4
INPUTS = SIDE * SIDE * 3
TARGET = 7  # label 7 is logit column 6


def _build_linear_logits(images, scope: str):
    from nips_adv.models.tf_compat import tf, tf1

    with tf1.variable_scope(scope):
        weights = tf1.get_variable("weights", [INPUTS, 1000])
    return tf.matmul(tf.reshape(images, [-1, INPUTS]), weights)


TOY = Architecture(
    name="toy_linear",
    description="logits = flattened pixels @ weights",
    default_scope="Toy",
    num_classes=1000,
    image_size=SIDE,
    preprocess=lambda pixels: pixels,
    build_logits=_build_linear_logits,
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Classifier, np.ndarray]:
    """A linear classifier whose logit for TARGET on all-ones pixels leads the others by about 25."""
    from nips_adv.models.tf_compat import tf, tf1

    rng = np.random.default_rng(0)
    weights = rng.normal(0.0, 0.01, size=(INPUTS, 1000))
    weights[:, TARGET - 1] += 25.0 / INPUTS
    prefix = tmp_path_factory.mktemp("toy") / "toy.ckpt"
    graph = tf.Graph()
    with graph.as_default():
        variable = tf1.get_variable("Toy/weights", initializer=weights.astype(np.float32))
        with tf1.Session(graph=graph) as session:
            session.run(variable.initializer)
            tf1.train.Saver([variable]).save(session, str(prefix), write_meta_graph=False)
    with Classifier([Network("toy_linear", TOY, prefix, "Toy")]) as classifier:
        yield classifier, weights.astype(np.float32).astype(np.float64)


def _probabilities(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def test_a_saturated_target_keeps_the_term_that_raises_its_logit(toy: tuple[Classifier, np.ndarray]) -> None:
    classifier, weights = toy
    pixels = np.ones((1, SIDE, SIDE, 3), np.float32)
    logits = pixels.reshape(1, INPUTS).astype(np.float64) @ weights
    probabilities = _probabilities(logits[0])
    assert np.float32(probabilities[TARGET - 1]) == np.float32(1.0)  # float32 would round 1 - p to 0
    # d(-log p_t)/dx = W (p - e_t); the -W[:, t] (1 - p_t) term dominates here.
    expected = weights @ (probabilities - np.eye(1000)[TARGET - 1])
    gradient = classifier.gradient_function(cross_entropy)(pixels, np.array([TARGET]))
    np.testing.assert_allclose(gradient.reshape(INPUTS), expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())


def test_weighted_labels_and_own_labels_in_closed_form(toy: tuple[Classifier, np.ndarray]) -> None:
    classifier, weights = toy
    pixels = np.random.default_rng(1).uniform(0, 0.05, size=(1, SIDE, SIDE, 3)).astype(np.float32)
    logits = pixels.reshape(1, INPUTS).astype(np.float64) @ weights
    probabilities = _probabilities(logits[0])
    labels, label_weights = np.array([[3, 900]]), np.array([[0.25, 0.75]], np.float32)
    gradient = classifier.gradient_function(cross_entropy)(pixels, labels, label_weights)
    # -sum_k w_k log p_k has the gradient W (sum_k w_k (p - e_k)).
    upstream = 0.25 * (probabilities - np.eye(1000)[2]) + 0.75 * (probabilities - np.eye(1000)[899])
    np.testing.assert_allclose(gradient.reshape(INPUTS), weights @ upstream, rtol=1e-3, atol=1e-6)

    own, own_weights = own_labels(classifier.logits(pixels), 4)
    top = np.argsort(-probabilities)[:4]
    assert own.tolist() == [(top + 1).tolist()]
    np.testing.assert_allclose(own_weights[0], probabilities[top] / probabilities[top].sum(), rtol=1e-4)


def test_margin_is_the_best_rival_logit_minus_the_label_logit(toy: tuple[Classifier, np.ndarray]) -> None:
    classifier, weights = toy
    pixels = np.random.default_rng(2).uniform(0, 0.05, size=(1, SIDE, SIDE, 3)).astype(np.float32)
    logits = (pixels.reshape(1, INPUTS).astype(np.float64) @ weights)[0]
    label = int(np.argsort(logits)[500]) + 1  # a middling class: the rival is the prediction
    rival = int(np.argmax(logits))
    gradient = classifier.gradient_function(margin)(pixels, np.array([label]))
    np.testing.assert_allclose(gradient.reshape(INPUTS), weights[:, rival] - weights[:, label - 1], rtol=1e-4, atol=1e-6)

    # Saturated: the target leads by ~25, where the float32 softmax rounds to one; the margin keeps its full gradient.
    ones = np.ones((1, SIDE, SIDE, 3), np.float32)
    ones_logits = (ones.reshape(1, INPUTS).astype(np.float64) @ weights)[0]
    runner_up = int(np.argsort(ones_logits)[-2])
    gradient = classifier.gradient_function(margin)(ones, np.array([TARGET]))
    np.testing.assert_allclose(gradient.reshape(INPUTS), weights[:, runner_up] - weights[:, TARGET - 1], rtol=1e-4, atol=1e-6)


def test_margin_over_several_labels_shares_the_best_rival_outside_them(toy: tuple[Classifier, np.ndarray]) -> None:
    classifier, weights = toy
    pixels = np.random.default_rng(3).uniform(0, 0.05, size=(1, SIDE, SIDE, 3)).astype(np.float32)
    logits = (pixels.reshape(1, INPUTS).astype(np.float64) @ weights)[0]
    top = np.argsort(-logits)[:3]
    own, own_weights = own_labels(classifier.logits(pixels), 3)
    gradient = classifier.gradient_function(margin)(pixels, own, own_weights)
    # sum_k w_k (z_rival - z_k), the rival being the fourth class: the top three are pushed down together,
    # not each against the others.
    expected = sum(w * (weights[:, np.argsort(-logits)[3]] - weights[:, k]) for w, k in zip(own_weights[0], top))
    assert own.tolist() == [(top + 1).tolist()]
    np.testing.assert_allclose(gradient.reshape(INPUTS), expected, rtol=1e-4, atol=1e-6)


def test_an_unknown_loss_is_refused_and_a_compiled_one_is_reused(toy: tuple[Classifier, np.ndarray]) -> None:
    classifier, _ = toy
    with pytest.raises(ValueError, match="loss 'hinge' is not one of cross-entropy, margin"):
        get_loss("hinge")
    operations = len(classifier._graph.get_operations())
    classifier.gradient_function(cross_entropy)
    assert len(classifier._graph.get_operations()) == operations  # compiled once, by the tests above
    with pytest.raises(ValueError, match="labels must be 1 rows of integers 1..1000"):
        classifier.gradient_function(cross_entropy)(np.zeros((1, SIDE, SIDE, 3), np.float32), np.array([0]))
