"""TF-slim Inception V3 (``inception_v3_2016_08_28``): 1001 classes, inputs in [-1, 1], scope ``InceptionV3``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..contract.constants import IMAGE_SIZE
from .registry import ModelSpec, find_checkpoint_in_dir, register_model

if TYPE_CHECKING:
    import tensorflow as tf

NUM_CLASSES = 1001
SCOPE = "InceptionV3"


def preprocess_inception(pixels: "tf.Tensor") -> "tf.Tensor":
    """Pixels 0..255 -> [-1, 1], the range of every TF-slim Inception checkpoint."""
    return pixels / 127.5 - 1.0


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


def _inception_v3_spec(name: str, checkpoint_name: str, description: str) -> ModelSpec:
    def default_checkpoint() -> Path:
        return find_checkpoint_in_dir(checkpoint_name, f"get it with `nips-adv download checkpoint {name}`")

    return ModelSpec(
        name=name,
        description=description,
        scope=SCOPE,
        num_classes=NUM_CLASSES,
        image_size=IMAGE_SIZE,
        preprocess=preprocess_inception,
        build_logits=build_inception_v3_logits,
        default_checkpoint=default_checkpoint,
    )


# The adversarially trained checkpoints keep the architecture and the scope; only the weights differ.
for _name, _checkpoint, _description in (
    ("inception_v3", "inception_v3.ckpt", "TF-slim Inception V3 (inception_v3_2016_08_28), 1001 classes"),
    ("adv_inception_v3", "adv_inception_v3.ckpt", "Inception V3 adversarially trained (adv_inception_v3_2017_08_18)"),
    ("ens3_adv_inception_v3", "ens3_adv_inception_v3.ckpt", "Inception V3, ensemble adversarial training, 3 models"),
    ("ens4_adv_inception_v3", "ens4_adv_inception_v3.ckpt", "Inception V3, ensemble adversarial training, 4 models"),
):
    register_model(_inception_v3_spec(_name, _checkpoint, _description))
