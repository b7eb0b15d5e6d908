"""Inception-ResNet-v2 in TF-slim graph mode: 1001 classes, inputs ``(batch, 299, 299, 3)`` in [-1, 1], scope ``InceptionResnetV2``.

Szegedy, Ioffe, Vanhoucke and Alemi, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning" (2016), arXiv:1602.07261, figures 3, 7, 15-18 (residual branches scaled
by 0.17, 0.10 and 0.20 before the sum, section 3.3). Variable names and shapes are those of the
TF-slim checkpoint archives ``inception_resnet_v2_2016_08_30.tar.gz`` and, with the same names,
``ens_adv_inception_resnet_v2_2017_08_18.tar.gz`` (Tramer et al. 2017, arXiv:1705.07204), pinned in
``tests/data/inception_resnet_v2_variables.txt``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..contract.constants import SLIM_NUM_CLASSES
from .inception_v4 import (
    Branch,
    Conv,
    Pool,
    auxiliary_head,
    build_branches,
    build_layer,
    classifier_head,
    inception_arg_scope,
)

if TYPE_CHECKING:
    import tensorflow as tf

SCOPE = "InceptionResnetV2"
NUM_CLASSES = SLIM_NUM_CLASSES

_REDUCE: dict[str, Any] = {"stride": 2, "padding": "VALID"}
_VALID: dict[str, Any] = {"padding": "VALID"}

STEM = (
    Conv("Conv2d_1a_3x3", 32, 3, **_REDUCE),
    Conv("Conv2d_2a_3x3", 32, 3, **_VALID),
    Conv("Conv2d_2b_3x3", 64, 3),
    Pool("MaxPool_3a_3x3", **_REDUCE),
    Conv("Conv2d_3b_1x1", 80, 1, **_VALID),
    Conv("Conv2d_4a_3x3", 192, 3, **_VALID),
    Pool("MaxPool_5a_3x3", **_REDUCE),
)
"""The TF-slim checkpoint's stem: Inception V3's, not the paper's figure 3 (35x35x192 either way)."""

MIXED_5B = (
    (Conv("Conv2d_1x1", 96, 1),),
    (Conv("Conv2d_0a_1x1", 48, 1), Conv("Conv2d_0b_5x5", 64, 5)),
    (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_3x3", 96, 3), Conv("Conv2d_0c_3x3", 96, 3)),
    (Pool("AvgPool_0a_3x3"), Conv("Conv2d_0b_1x1", 64, 1)),
)
BLOCK35 = (  # Inception-ResNet-A, 35x35x320
    (Conv("Conv2d_1x1", 32, 1),),
    (Conv("Conv2d_0a_1x1", 32, 1), Conv("Conv2d_0b_3x3", 32, 3)),
    (Conv("Conv2d_0a_1x1", 32, 1), Conv("Conv2d_0b_3x3", 48, 3), Conv("Conv2d_0c_3x3", 64, 3)),
)
MIXED_6A = (  # Reduction-A with k, l, m, n = 256, 256, 384, 384 -> 17x17x1088
    (Conv("Conv2d_1a_3x3", 384, 3, **_REDUCE),),
    (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_0b_3x3", 256, 3), Conv("Conv2d_1a_3x3", 384, 3, **_REDUCE)),
    (Pool("MaxPool_1a_3x3", **_REDUCE),),
)
BLOCK17 = (  # Inception-ResNet-B, 17x17x1088
    (Conv("Conv2d_1x1", 192, 1),),
    (Conv("Conv2d_0a_1x1", 128, 1), Conv("Conv2d_0b_1x7", 160, (1, 7)), Conv("Conv2d_0c_7x1", 192, (7, 1))),
)
MIXED_7A = (  # Reduction-B -> 8x8x2080
    (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_1a_3x3", 384, 3, **_REDUCE)),
    (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_1a_3x3", 288, 3, **_REDUCE)),
    (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_0b_3x3", 288, 3), Conv("Conv2d_1a_3x3", 320, 3, **_REDUCE)),
    (Pool("MaxPool_1a_3x3", **_REDUCE),),
)
BLOCK8 = (  # Inception-ResNet-C, 8x8x2080
    (Conv("Conv2d_1x1", 192, 1),),
    (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_0b_1x3", 224, (1, 3)), Conv("Conv2d_0c_3x1", 256, (3, 1))),
)


def residual_block(net: "tf.Tensor", branches: tuple[Branch, ...], *, scale: float, relu: bool = True) -> "tf.Tensor":
    """``net + scale * Conv2d_1x1(concat(branches))``, then ReLU; the 1x1 projection back to ``net``'s
    depth has biases and neither batch norm nor activation (paper figures 16-18 and section 3.3)."""
    from .layers import residual_add
    from .tf_compat import slim, tf

    mixed = build_branches(net, branches)
    up = slim.conv2d(mixed, net.shape[-1], 1, normalizer_fn=None, activation_fn=None, scope="Conv2d_1x1")
    net = residual_add(scale * up, net)
    return tf.nn.relu(net) if relu else net


def _repeat(net: "tf.Tensor", scope: str, block_name: str, count: int, branches: tuple[Branch, ...], scale: float) -> "tf.Tensor":
    """``count`` residual blocks named ``<scope>/<block_name>_<i>``, as ``slim.repeat`` names them."""
    from .tf_compat import tf1

    with tf1.variable_scope(scope):
        for index in range(1, count + 1):
            with tf1.variable_scope(f"{block_name}_{index}"):
                net = residual_block(net, branches, scale=scale)
    return net


def build_inception_resnet_v2_logits(
    images: "tf.Tensor", scope: str = SCOPE, *, with_aux_logits: bool = False
) -> "tf.Tensor":
    """Inference logits ``(batch, 1001)`` of Inception-ResNet-v2 for ``images`` ``(batch, 299, 299, 3)`` in [-1, 1].

    Variables are created under ``scope`` (reused when built again in the same scope). The
    auxiliary head (after the 17x17 blocks) is only for writing checkpoints with the official variable set.
    """
    from .tf_compat import slim, tf1

    with tf1.variable_scope(scope, reuse=tf1.AUTO_REUSE), inception_arg_scope():
        net = images
        for layer in STEM:
            net = build_layer(net, layer)
        with tf1.variable_scope("Mixed_5b"):
            net = build_branches(net, MIXED_5B)
        net = _repeat(net, "Repeat", "block35", 10, BLOCK35, scale=0.17)
        with tf1.variable_scope("Mixed_6a"):
            net = build_branches(net, MIXED_6A)
        net = _repeat(net, "Repeat_1", "block17", 20, BLOCK17, scale=0.10)
        if with_aux_logits:
            auxiliary_head(net, pool_scope="Conv2d_1a_3x3", conv_scope="Conv2d_2a_5x5", logits_scope="Logits")
        with tf1.variable_scope("Mixed_7a"):
            net = build_branches(net, MIXED_7A)
        net = _repeat(net, "Repeat_2", "block8", 9, BLOCK8, scale=0.20)
        with tf1.variable_scope("Block8"):
            net = residual_block(net, BLOCK8, scale=1.0, relu=False)
        net = slim.conv2d(net, 1536, 1, scope="Conv2d_7b_1x1")
        return classifier_head(net)
