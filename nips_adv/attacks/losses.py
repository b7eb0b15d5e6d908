"""What an attack's steps climb (non-targeted) or descend (targeted), and which classes they measure it against.

A loss is a TensorFlow function the classifier compiles (``Classifier.gradient_function``):
``loss(logits (N, 1000) float32, labels (N, K) int32 1..1000, weights (N, K) float32) -> scalar``,
the sum over images and their labels of ``weight * distance(image, label)``. With one label of
weight 1 per image, the usual loss. TensorFlow is imported when a loss is compiled, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..contract.constants import NUM_LABELS

if TYPE_CHECKING:
    import tensorflow as tf


def cross_entropy(logits: "tf.Tensor", labels: "tf.Tensor", weights: "tf.Tensor") -> "tf.Tensor":
    """``sum weights * -log p(label)``, in float64.

    In float64 because once an attack makes a class's float32 probability round to exactly 1, the
    float32 gradient of its log-probability loses the term that raises that class's logit (1 - p = 0),
    which targeted attacks reach within their 20 iterations.
    """
    from ..models.tf_compat import tf

    log_probabilities = tf.nn.log_softmax(tf.cast(logits, tf.float64))
    distance = -tf.gather(log_probabilities, labels - 1, batch_dims=1)
    return tf.reduce_sum(tf.cast(weights, tf.float64) * distance)


def margin(logits: "tf.Tensor", labels: "tf.Tensor", weights: "tf.Tensor") -> "tf.Tensor":
    """``sum weights * (best logit outside the image's labels - the label's logit)``, in float64.

    Carlini & Wagner's margin (2017, arXiv 1608.04644), uncapped: it does not saturate with the
    softmax, and only the strongest rival counts. An image's labels share one rival: with several
    own classes, they are pushed down together, not each against the others.
    """
    from ..models.tf_compat import tf

    logits64 = tf.cast(logits, tf.float64)
    columns = labels - 1
    is_label = tf.reduce_any(tf.one_hot(columns, NUM_LABELS, on_value=True, off_value=False), axis=1)
    best_rival = tf.reduce_max(tf.where(is_label, tf.float64.min, logits64), axis=1, keepdims=True)
    distance = best_rival - tf.gather(logits64, columns, batch_dims=1)
    return tf.reduce_sum(tf.cast(weights, tf.float64) * distance)


def own_labels(logits: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(batch, count)`` labels 1..1000 of the ``count`` highest of ``(batch, 1000)`` logits, highest
    first, and their probabilities renormalised over those ``count`` (float32, rows sum to 1).

    What a non-targeted attack without true labels moves away from: the model's own belief.
    """
    if not 1 <= count <= logits.shape[1]:
        raise ValueError(f"own classes must be 1..{logits.shape[1]}, got {count}")
    indices = np.argsort(-logits, axis=1, kind="stable")[:, :count]
    top = np.take_along_axis(logits, indices, axis=1).astype(np.float64)
    weights = np.exp(top - top[:, :1])
    return indices + 1, (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def logit_loss(logits: "tf.Tensor", labels: "tf.Tensor", weights: "tf.Tensor") -> "tf.Tensor":
    """``sum weights * -(the label's logit)``, in float64: the logit loss of Zhao, Liu & Larson (2021,
    "On Success and Simplicity: A Second Look at Transferable Targeted Attacks", arXiv 2012.11207).

    For targeted attacks (descended: raises the target's logit). Unlike cross-entropy it does not
    saturate once the target is likely, so it keeps improving over the ~300 iterations the paper
    runs with DI + TI + MI (step 2/255, eps 16/255).
    """
    from ..models.tf_compat import tf

    target_logits = tf.gather(tf.cast(logits, tf.float64), labels - 1, batch_dims=1)
    return tf.reduce_sum(tf.cast(weights, tf.float64) * -target_logits)


LOSSES: dict[str, Callable[["tf.Tensor", "tf.Tensor", "tf.Tensor"], "tf.Tensor"]] = {
    "cross-entropy": cross_entropy,
    "margin": margin,
    "logit": logit_loss,
}
"""The losses ``--loss`` chooses from, by name."""


def get_loss(name: str) -> Callable[["tf.Tensor", "tf.Tensor", "tf.Tensor"], "tf.Tensor"]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss {name!r} is not one of {', '.join(LOSSES)}") from None
