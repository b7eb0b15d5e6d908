"""Inception V4 in TF-slim graph mode: 1001 classes, inputs ``(batch, 299, 299, 3)`` in [-1, 1], scope ``InceptionV4``.

Szegedy, Ioffe, Vanhoucke and Alemi, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning" (2016), arXiv:1602.07261, figures 3-9. Variable names and shapes are those
of the TF-slim checkpoint archive ``inception_v4_2016_09_09.tar.gz`` (``inception_v4.ckpt``), pinned
in ``tests/data/inception_v4_variables.txt``.

tf-slim's package does not ship this network, so it is written here from a table of blocks; the
block helpers (``Conv``, ``Pool``, ``Fork``, ``build_branches``, ``inception_arg_scope``) are shared
with ``inception_resnet_v2``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from ..contract.constants import SLIM_NUM_CLASSES

if TYPE_CHECKING:
    import tensorflow as tf

SCOPE = "InceptionV4"
NUM_CLASSES = SLIM_NUM_CLASSES
AUX_KERNEL = (5, 5)
"""Spatial side of the auxiliary head's second convolution at 299x299 (17x17 pooled 5/3 -> 5x5)."""


@dataclass(frozen=True)
class Conv:
    """A convolution + frozen batch norm + ReLU under ``scope`` (weights ``(kh, kw, in, depth)``)."""

    scope: str
    depth: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: str = "SAME"


@dataclass(frozen=True)
class Pool:
    """A 3x3 max or average pool (no variables); ``scope`` starts with ``MaxPool`` or ``AvgPool``."""

    scope: str
    stride: int = 1
    padding: str = "SAME"


@dataclass(frozen=True)
class Fork:
    """Several convolutions of the same input, concatenated on channels (Inception-C's 1x3 | 3x1 split)."""

    convs: tuple[Conv, ...]


Layer = Union[Conv, Pool, Fork]
Branch = tuple[Layer, ...]


def build_layer(net: "tf.Tensor", layer: Layer) -> "tf.Tensor":
    """One table entry applied to ``net`` (NHWC) under the current arg scope."""
    from .tf_compat import slim, tf

    if isinstance(layer, Conv):
        return slim.conv2d(net, layer.depth, layer.kernel, stride=layer.stride, padding=layer.padding, scope=layer.scope)
    if isinstance(layer, Fork):
        return tf.concat([build_layer(net, conv) for conv in layer.convs], axis=3)
    pool = slim.max_pool2d if layer.scope.startswith("MaxPool") else slim.avg_pool2d
    return pool(net, [3, 3], stride=layer.stride, padding=layer.padding, scope=layer.scope)


def build_branches(net: "tf.Tensor", branches: tuple[Branch, ...]) -> "tf.Tensor":
    """Each branch (a chain of layers) under ``Branch_<i>``, outputs concatenated on channels."""
    from .tf_compat import tf, tf1

    outputs = []
    for index, branch in enumerate(branches):
        with tf1.variable_scope(f"Branch_{index}"):
            tower = net
            for layer in branch:
                tower = build_layer(tower, layer)
            outputs.append(tower)
    return tf.concat(outputs, axis=3)


@contextlib.contextmanager
def inception_arg_scope():
    """The TF-slim Inception defaults for inference: every convolution is conv + frozen batch norm
    (epsilon 0.001, no gamma, as the checkpoints have) + ReLU, He-initialised for random weights."""
    from .layers import slim_frozen_batch_norm
    from .tf_compat import slim, tf

    with slim.arg_scope(
        [slim.conv2d],
        activation_fn=tf.nn.relu,
        normalizer_fn=slim_frozen_batch_norm,
        normalizer_params={"epsilon": 0.001},
        weights_initializer=slim.variance_scaling_initializer(),
    ):
        with slim.arg_scope([slim.conv2d, slim.max_pool2d, slim.avg_pool2d], stride=1, padding="SAME") as scope:
            yield scope


def classifier_head(net: "tf.Tensor", num_classes: int = NUM_CLASSES) -> "tf.Tensor":
    """``Logits/Logits``: global average pool, then a fully connected layer -> ``(batch, num_classes)``."""
    from .tf_compat import slim, tf, tf1

    with tf1.variable_scope("Logits"):
        pooled = tf.reduce_mean(net, axis=[1, 2])  # = the 8x8 VALID average pool at 299x299
        return slim.fully_connected(pooled, num_classes, activation_fn=None, scope="Logits")


def auxiliary_head(net: "tf.Tensor", *, pool_scope: str, conv_scope: str, logits_scope: str) -> "tf.Tensor":
    """``AuxLogits`` on a 17x17 feature map (training-time only; built to write the full variable set)."""
    from .tf_compat import slim, tf, tf1

    with tf1.variable_scope("AuxLogits"):
        aux = slim.avg_pool2d(net, [5, 5], stride=3, padding="VALID", scope=pool_scope)
        aux = slim.conv2d(aux, 128, 1, scope="Conv2d_1b_1x1")
        aux = slim.conv2d(aux, 768, AUX_KERNEL, padding="VALID", scope=conv_scope)  # -> 1x1 at 299x299
        return slim.fully_connected(tf.squeeze(aux, axis=[1, 2]), NUM_CLASSES, activation_fn=None, scope=logits_scope)


_REDUCE: dict[str, Any] = {"stride": 2, "padding": "VALID"}

# Figure 3 (stem), 4-9 of the paper; names as in the TF-slim checkpoint.
STEM = (Conv("Conv2d_1a_3x3", 32, 3, **_REDUCE), Conv("Conv2d_2a_3x3", 32, 3, padding="VALID"), Conv("Conv2d_2b_3x3", 64, 3))
MIXED_3A = ((Pool("MaxPool_0a_3x3", **_REDUCE),), (Conv("Conv2d_0a_3x3", 96, 3, **_REDUCE),))
MIXED_4A = (
    (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_1a_3x3", 96, 3, padding="VALID")),
    (
        Conv("Conv2d_0a_1x1", 64, 1),
        Conv("Conv2d_0b_1x7", 64, (1, 7)),
        Conv("Conv2d_0c_7x1", 64, (7, 1)),
        Conv("Conv2d_1a_3x3", 96, 3, padding="VALID"),
    ),
)
MIXED_5A = ((Conv("Conv2d_1a_3x3", 192, 3, **_REDUCE),), (Pool("MaxPool_1a_3x3", **_REDUCE),))
INCEPTION_A = (
    (Conv("Conv2d_0a_1x1", 96, 1),),
    (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_3x3", 96, 3)),
    (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_3x3", 96, 3), Conv("Conv2d_0c_3x3", 96, 3)),
    (Pool("AvgPool_0a_3x3"), Conv("Conv2d_0b_1x1", 96, 1)),
)
REDUCTION_A = (  # k, l, m, n = 192, 224, 256, 384 (table 1)
    (Conv("Conv2d_1a_3x3", 384, 3, **_REDUCE),),
    (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_0b_3x3", 224, 3), Conv("Conv2d_1a_3x3", 256, 3, **_REDUCE)),
    (Pool("MaxPool_1a_3x3", **_REDUCE),),
)
INCEPTION_B = (
    (Conv("Conv2d_0a_1x1", 384, 1),),
    (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_0b_1x7", 224, (1, 7)), Conv("Conv2d_0c_7x1", 256, (7, 1))),
    (
        Conv("Conv2d_0a_1x1", 192, 1),
        Conv("Conv2d_0b_7x1", 192, (7, 1)),
        Conv("Conv2d_0c_1x7", 224, (1, 7)),
        Conv("Conv2d_0d_7x1", 224, (7, 1)),
        Conv("Conv2d_0e_1x7", 256, (1, 7)),
    ),
    (Pool("AvgPool_0a_3x3"), Conv("Conv2d_0b_1x1", 128, 1)),
)
REDUCTION_B = (
    (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_1a_3x3", 192, 3, **_REDUCE)),
    (
        Conv("Conv2d_0a_1x1", 256, 1),
        Conv("Conv2d_0b_1x7", 256, (1, 7)),
        Conv("Conv2d_0c_7x1", 320, (7, 1)),
        Conv("Conv2d_1a_3x3", 320, 3, **_REDUCE),
    ),
    (Pool("MaxPool_1a_3x3", **_REDUCE),),
)
INCEPTION_C = (
    (Conv("Conv2d_0a_1x1", 256, 1),),
    (Conv("Conv2d_0a_1x1", 384, 1), Fork((Conv("Conv2d_0b_1x3", 256, (1, 3)), Conv("Conv2d_0c_3x1", 256, (3, 1))))),
    (
        Conv("Conv2d_0a_1x1", 384, 1),
        Conv("Conv2d_0b_3x1", 448, (3, 1)),
        Conv("Conv2d_0c_1x3", 512, (1, 3)),
        Fork((Conv("Conv2d_0d_1x3", 256, (1, 3)), Conv("Conv2d_0e_3x1", 256, (3, 1)))),
    ),
    (Pool("AvgPool_0a_3x3"), Conv("Conv2d_0b_1x1", 256, 1)),
)
MIXED_BLOCKS: tuple[tuple[str, tuple[Branch, ...]], ...] = (
    (("Mixed_3a", MIXED_3A), ("Mixed_4a", MIXED_4A), ("Mixed_5a", MIXED_5A))
    + tuple((f"Mixed_5{letter}", INCEPTION_A) for letter in "bcde")
    + (("Mixed_6a", REDUCTION_A),)
    + tuple((f"Mixed_6{letter}", INCEPTION_B) for letter in "bcdefgh")
    + (("Mixed_7a", REDUCTION_B),)
    + tuple((f"Mixed_7{letter}", INCEPTION_C) for letter in "bcd")
)
"""The Inception V4 body after the stem: (scope, branches); 35x35x384 -> 17x17x1024 -> 8x8x1536."""

AUX_INPUT = "Mixed_6h"


def build_inception_v4_logits(images: "tf.Tensor", scope: str = SCOPE, *, with_aux_logits: bool = False) -> "tf.Tensor":
    """Inference logits ``(batch, 1001)`` of Inception V4 for ``images`` ``(batch, 299, 299, 3)`` in [-1, 1].

    Variables are created under ``scope`` (reused when built again in the same scope). The
    auxiliary head (on ``Mixed_6h``) is only for writing checkpoints with the official variable set.
    """
    from .tf_compat import tf1

    with tf1.variable_scope(scope, reuse=tf1.AUTO_REUSE), inception_arg_scope():
        net = images
        for conv in STEM:
            net = build_layer(net, conv)
        for block_scope, branches in MIXED_BLOCKS:
            with tf1.variable_scope(block_scope):
                net = build_branches(net, branches)
            if with_aux_logits and block_scope == AUX_INPUT:
                auxiliary_head(net, pool_scope="AvgPool_1a_5x5", conv_scope="Conv2d_2a", logits_scope="Aux_logits")
        return classifier_head(net)
