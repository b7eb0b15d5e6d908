"""Building blocks shared by the architectures (graph mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf


def frozen_batch_norm(
    inputs: "tf.Tensor",
    *,
    mean: "tf.Tensor",
    variance: "tf.Tensor",
    offset: "tf.Tensor",
    scale: "tf.Tensor | None" = None,
    epsilon: float,
) -> "tf.Tensor":
    """Inference-time batch norm as one multiply-add per channel.

    The same values as ``tf.nn.fused_batch_norm(..., is_training=False)``; its gradient to the
    inputs is a plain multiply, which runs faster on CPU than FusedBatchNormGrad (the attacks
    spend most of their time in that backward pass).
    """
    from .tf_compat import tf

    multiplier = tf.math.rsqrt(variance + epsilon)
    if scale is not None:
        multiplier = multiplier * scale
    return inputs * multiplier + (offset - mean * multiplier)


def slim_frozen_batch_norm(inputs: "tf.Tensor", *, epsilon: float = 0.001, scale: bool = False, scope=None, **unused) -> "tf.Tensor":
    """Drop-in ``normalizer_fn`` for tf-slim nets in inference: the variables (``BatchNorm/beta``,
    ``moving_mean``, ``moving_variance``, ``gamma`` if ``scale``) are named as slim.batch_norm names
    them, so official checkpoints restore; the other batch-norm parameters only matter in training."""
    from .tf_compat import slim, tf1

    with tf1.variable_scope(scope, "BatchNorm", [inputs]):
        channels = inputs.shape[-1]
        zeros, ones = tf1.zeros_initializer(), tf1.ones_initializer()
        offset = slim.model_variable("beta", shape=[channels], initializer=zeros)
        gamma = slim.model_variable("gamma", shape=[channels], initializer=ones) if scale else None
        mean = slim.model_variable("moving_mean", shape=[channels], initializer=zeros, trainable=False)
        variance = slim.model_variable("moving_variance", shape=[channels], initializer=ones, trainable=False)
        return frozen_batch_norm(inputs, mean=mean, variance=variance, offset=offset, scale=gamma, epsilon=epsilon)
