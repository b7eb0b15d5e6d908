"""TF-slim Inception V3: 1001 classes, inputs in [-1, 1], default scope ``InceptionV3`` (registered in ``networks.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contract.constants import SLIM_NUM_CLASSES
from .networks import preprocess_inception  # noqa: F401  (re-exported: the range of every TF-slim checkpoint)

if TYPE_CHECKING:
    import tensorflow as tf

NUM_CLASSES = SLIM_NUM_CLASSES
SCOPE = "InceptionV3"


def build_inception_v3_logits(images: "tf.Tensor", scope: str = SCOPE, *, with_aux_logits: bool = False) -> "tf.Tensor":
    """Inference logits ``(batch, 1001)`` of Inception V3 for ``images`` in [-1, 1].

    Batch norm is the frozen multiply-add of ``layers.slim_frozen_batch_norm`` (same variables,
    same values, faster input gradients than tf-slim's fused op, and no tf_keras needed).
    The auxiliary head is left out for inference (the checkpoint's extra variables are ignored);
    ``with_aux_logits`` builds it for writing a checkpoint with the full official variable set.
    """
    from tf_slim.nets import inception_v3

    from .layers import slim_frozen_batch_norm
    from .tf_compat import slim

    with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
        with slim.arg_scope([slim.conv2d], normalizer_fn=slim_frozen_batch_norm):
            logits, _ = inception_v3.inception_v3(
                images,
                num_classes=NUM_CLASSES,
                is_training=False,
                create_aux_logits=with_aux_logits,
                scope=scope,
            )
    return logits
