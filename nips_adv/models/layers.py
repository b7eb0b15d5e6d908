"""Building blocks shared by the architectures (graph mode)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
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


# --- backward rules: how an attack's gradient runs back through residual blocks and activations -----------


@dataclass(frozen=True)
class BackwardRule:
    """How the gradient an attack asks for runs back through a network's residual blocks and ReLUs.

    The forward values are the network's own except under ``skip_erosion``; the classifier builds a
    rule's networks only in the gradient graphs that ask for it (``Classifier.gradient_function``), so
    predictions never see it. Architectures apply it through ``residual_add`` and ``relu``; one with no
    residual block is unchanged (the classifier warns).

    - ``skip_gradient`` (SGM, Wu et al. 2020, arXiv 2002.05990): the gradient through each residual
      branch is multiplied by gamma, the shortcut's kept; 1 is off (paper: 0.2 on ResNets).
    - ``linear_backward`` (LinBP, Guo et al. 2020, arXiv 2012.03528): the ReLUs of this last share of the
      network's blocks (0..1) pass the gradient through as if linear; 0 is off.
    - ``skip_erosion`` (ghost networks, Li et al. 2020, arXiv 1812.03413): each shortcut is scaled by a new
      uniform draw in 1 +- this per network input and run, a new ghost network per step; 0 is off
      (paper: 0.22). Changes the forward values of the gradient graph.
    """

    skip_gradient: float = 1.0
    linear_backward: float = 0.0
    skip_erosion: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.skip_gradient <= 1.0:
            raise ValueError(f"skip_gradient must be in (0, 1], got {self.skip_gradient}")
        if not 0.0 <= self.linear_backward <= 1.0:
            raise ValueError(f"linear_backward must be in [0, 1], got {self.linear_backward}")
        if not 0.0 <= self.skip_erosion < 1.0:
            raise ValueError(f"skip_erosion must be in [0, 1), got {self.skip_erosion}")

    @property
    def is_identity(self) -> bool:
        return self.skip_gradient == 1.0 and self.linear_backward == 0.0 and self.skip_erosion == 0.0


class _RuleInUse:
    """The rule the networks being built follow, and how many of their layers it reached."""

    def __init__(self, rule: BackwardRule | None) -> None:
        self.rule = rule
        self.applied = 0


_rule_in_use = _RuleInUse(None)


@contextlib.contextmanager
def backward_rule(rule: BackwardRule | None) -> Iterator[_RuleInUse]:
    """Networks built inside follow ``rule`` (None: their own gradient); yields a counter of the layers it
    reached, so a caller can tell a network without residual blocks. Graph building is single-threaded."""
    global _rule_in_use
    previous, _rule_in_use = _rule_in_use, _RuleInUse(rule)
    try:
        yield _rule_in_use
    finally:
        _rule_in_use = previous


def residual_add(branch: "tf.Tensor", shortcut: "tf.Tensor") -> "tf.Tensor":
    """``shortcut + branch``, the sum ending a residual block, under the rule in use (SGM, skip erosion)."""
    from .tf_compat import tf

    rule = _rule_in_use.rule
    if rule is None or rule.is_identity:
        return shortcut + branch
    _rule_in_use.applied += 1
    if rule.skip_gradient != 1.0:
        gamma = rule.skip_gradient
        branch = gamma * branch + (1.0 - gamma) * tf.stop_gradient(branch)
    if rule.skip_erosion:
        shape = tf.stack([tf.shape(shortcut)[0]] + [1] * (len(shortcut.shape) - 1))
        low, high = 1.0 - rule.skip_erosion, 1.0 + rule.skip_erosion
        shortcut = shortcut * tf.random.uniform(shape, low, high, dtype=shortcut.dtype)
    return shortcut + branch


def relu(inputs: "tf.Tensor", *, depth: float, relu6: bool = False) -> "tf.Tensor":
    """ReLU (or ReLU6) at ``depth`` (0 at the input .. 1 at the last block) under the rule in use:
    LinBP passes the gradient straight through where ``depth`` lies in the rule's last share."""
    from .tf_compat import tf

    value = tf.nn.relu6(inputs) if relu6 else tf.nn.relu(inputs)
    rule = _rule_in_use.rule
    if rule is None or rule.linear_backward == 0.0 or depth < 1.0 - rule.linear_backward:
        return value
    _rule_in_use.applied += 1
    return inputs + tf.stop_gradient(value - inputs)
