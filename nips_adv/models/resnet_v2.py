"""ResNet-v2-101 and ResNet-v2-152 in TF-slim graph mode: 1001 classes, inputs ``(batch, 299, 299, 3)`` in [-1, 1].

He, Zhang, Ren and Sun, "Identity Mappings in Deep Residual Networks" (2016), arXiv:1603.05027
(pre-activation bottleneck units). Variable names and shapes are those of the TF-slim checkpoint
archives ``resnet_v2_101_2017_04_14.tar.gz`` and ``resnet_v2_152_2017_04_14.tar.gz``
(``resnet_v2_101.ckpt``, ``resnet_v2_152.ckpt``; scopes ``resnet_v2_101``, ``resnet_v2_152``; trained
with Inception preprocessing at 299x299), pinned in ``tests/data/resnet_v2_*_variables.txt``.

The blocks, units and strided ``SAME`` convolutions come from ``tf_slim.nets.resnet_utils``, the
block layout from ``tf_slim.nets.resnet_v2``. The unit and the root are written here because
tf-slim's ``resnet_v2`` calls ``slim.batch_norm`` directly, which needs tf_keras; the frozen
batch norm of ``layers.slim_frozen_batch_norm`` keeps the same variables (with ``gamma``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ..contract.constants import SLIM_NUM_CLASSES

if TYPE_CHECKING:
    import tensorflow as tf

SCOPE_101 = "resnet_v2_101"
SCOPE_152 = "resnet_v2_152"
NUM_CLASSES = SLIM_NUM_CLASSES
BATCH_NORM_EPSILON = 1e-5
UNITS_101 = (3, 4, 23, 3)
UNITS_152 = (3, 8, 36, 3)
"""Bottleneck units in block1..block4 (base depths 64, 128, 256, 512; the last unit of blocks 1-3 strides 2)."""


def _pre_activation(net: "tf.Tensor", scope: str) -> "tf.Tensor":
    from .layers import slim_frozen_batch_norm
    from .tf_compat import tf

    return tf.nn.relu(slim_frozen_batch_norm(net, epsilon=BATCH_NORM_EPSILON, scale=True, scope=scope))


def bottleneck_v2(
    inputs: "tf.Tensor", depth: int, depth_bottleneck: int, stride: int, rate: int = 1, scope: str | None = None
) -> "tf.Tensor":
    """Pre-activation bottleneck (paper figure 1b, 4e): BN-ReLU, 1x1, 3x3 (strided), 1x1, plus the shortcut;
    the shortcut is a strided subsample, or a 1x1 projection of the pre-activation when the depth changes."""
    from tf_slim.nets import resnet_utils

    from .layers import residual_add
    from .tf_compat import slim, tf1

    with tf1.variable_scope(scope, "bottleneck_v2", [inputs]):
        preact = _pre_activation(inputs, "preact")
        if inputs.shape[-1] == depth:
            shortcut = resnet_utils.subsample(inputs, stride, "shortcut")
        else:
            shortcut = slim.conv2d(preact, depth, 1, stride=stride, normalizer_fn=None, activation_fn=None, scope="shortcut")
        residual = slim.conv2d(preact, depth_bottleneck, 1, stride=1, scope="conv1")
        residual = resnet_utils.conv2d_same(residual, depth_bottleneck, 3, stride, rate=rate, scope="conv2")
        residual = slim.conv2d(residual, depth, 1, stride=1, normalizer_fn=None, activation_fn=None, scope="conv3")
        return residual_add(residual, shortcut)


@contextlib.contextmanager
def _resnet_arg_scope():
    """tf-slim's ``resnet_arg_scope`` for inference: conv + frozen batch norm (epsilon 1e-5, with gamma) + ReLU."""
    from .layers import slim_frozen_batch_norm
    from .tf_compat import slim, tf

    with slim.arg_scope(
        [slim.conv2d],
        activation_fn=tf.nn.relu,
        normalizer_fn=slim_frozen_batch_norm,
        normalizer_params={"epsilon": BATCH_NORM_EPSILON, "scale": True},
        weights_initializer=slim.variance_scaling_initializer(),
    ):
        with slim.arg_scope([slim.max_pool2d], padding="SAME") as scope:
            yield scope


def _build_resnet_v2_logits(images: "tf.Tensor", scope: str, units: tuple[int, ...]) -> "tf.Tensor":
    from tf_slim.nets import resnet_utils

    from .tf_compat import slim, tf, tf1

    blocks = [
        resnet_utils.Block(
            f"block{index}",
            bottleneck_v2,
            [{"depth": base * 4, "depth_bottleneck": base, "stride": 1}] * (count - 1)
            + [{"depth": base * 4, "depth_bottleneck": base, "stride": 2 if index < 4 else 1}],
        )
        for index, (base, count) in enumerate(zip((64, 128, 256, 512), units), start=1)
    ]
    with tf1.variable_scope(scope, reuse=tf1.AUTO_REUSE), _resnet_arg_scope():
        # The root convolution is not pre-activated: no batch norm, no ReLU, but biases.
        with slim.arg_scope([slim.conv2d], activation_fn=None, normalizer_fn=None):
            net = resnet_utils.conv2d_same(images, 64, 7, stride=2, scope="conv1")
        net = slim.max_pool2d(net, [3, 3], stride=2, scope="pool1")
        net = resnet_utils.stack_blocks_dense(net, blocks)
        net = _pre_activation(net, "postnorm")
        net = tf.reduce_mean(net, axis=[1, 2], keepdims=True)
        logits = slim.conv2d(net, NUM_CLASSES, 1, activation_fn=None, normalizer_fn=None, scope="logits")
        return tf.squeeze(logits, axis=[1, 2])


def build_resnet_v2_101_logits(images: "tf.Tensor", scope: str = SCOPE_101) -> "tf.Tensor":
    """Inference logits ``(batch, 1001)`` of ResNet-v2-101 for ``images`` ``(batch, 299, 299, 3)`` in [-1, 1]."""
    return _build_resnet_v2_logits(images, scope, UNITS_101)


def build_resnet_v2_152_logits(images: "tf.Tensor", scope: str = SCOPE_152) -> "tf.Tensor":
    """Inference logits ``(batch, 1001)`` of ResNet-v2-152 for ``images`` ``(batch, 299, 299, 3)`` in [-1, 1]."""
    return _build_resnet_v2_logits(images, scope, UNITS_152)
