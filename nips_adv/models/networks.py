"""Architectures (tf-slim ``nets_factory`` style): name -> how to build a network's logits.

An architecture is pure: ``build_logits(images, scope)`` creates its variables under ``scope``
in the current graph and returns ``(batch, num_classes)`` logits; it knows nothing of files,
sessions or attacks. Which weights fill it is the catalogue's business (``catalogue.py``); the
classifier (``classifier.py``) builds one or more architectures in one graph and restores each
from its own checkpoint file.

Builders are imported when first called, so listing architectures never imports TensorFlow, and an
architecture module that is absent from this installation is simply not registered.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..contract.constants import IMAGE_SIZE, NUM_LABELS, SLIM_NUM_CLASSES

if TYPE_CHECKING:
    import tensorflow as tf


class UnknownArchitectureError(ValueError):
    """An architecture name that is not registered; the message lists the known ones."""


@dataclass(frozen=True)
class Architecture:
    """One network architecture.

    - ``preprocess``: ``(batch, size, size, 3)`` float32 pixels 0..255 -> the network's input range.
    - ``build_logits``: ``(network input, variable scope) -> (batch, num_classes)`` logits, for
      inference (batch norm frozen); creates its variables under ``scope`` (reused when the caller's
      variable scope says so, so it can be built several times on different inputs).
    - ``num_classes``: 1001 (TF-slim, background class 0 first) or 1000 (label = index + 1).
    - ``default_scope``: the scope its variables carry in the official checkpoints.
    """

    name: str
    description: str
    default_scope: str
    num_classes: int
    image_size: int
    preprocess: Callable[["tf.Tensor"], "tf.Tensor"]
    build_logits: Callable[["tf.Tensor", str], "tf.Tensor"]

    @property
    def label_offset(self) -> int:
        """Logit columns to drop so that column i is label i + 1 (the background class, if any)."""
        return self.num_classes - NUM_LABELS


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    if architecture.name in _ARCHITECTURES:
        raise ValueError(f"architecture {architecture.name!r} is registered twice")
    _ARCHITECTURES[architecture.name] = architecture
    return architecture


def list_architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; known architectures: {', '.join(list_architectures())}"
        ) from None


def preprocess_inception(pixels: "tf.Tensor") -> "tf.Tensor":
    """Pixels 0..255 -> [-1, 1], the range of every TF-slim Inception and ResNet-v2 checkpoint."""
    return pixels / 127.5 - 1.0


def preprocess_efficientnet_lite(pixels: "tf.Tensor") -> "tf.Tensor":
    """Pixels 0..255 -> (x - 127) / 128, about [-1, 1], the range the Lite models were trained on."""
    return (pixels - 127.0) / 128.0


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(f"{__package__}.{module}") is not None


def _lazy_builder(module: str, function: str, **keywords: object) -> Callable[["tf.Tensor", str], "tf.Tensor"]:
    """``build_logits`` that imports ``nips_adv.models.<module>.<function>`` on first call."""

    def build_logits(images: "tf.Tensor", scope: str) -> "tf.Tensor":
        builder = getattr(importlib.import_module(f"{__package__}.{module}"), function)
        return builder(images, scope, **keywords)

    build_logits.__name__ = function
    return build_logits


def _register_tf_slim(name: str, module: str, function: str, scope: str, description: str) -> None:
    """A TF-slim ImageNet network: 1001 classes, 299x299 inputs in [-1, 1]; registered where its module exists."""
    if _module_exists(module):
        register_architecture(Architecture(
            name, description, scope, SLIM_NUM_CLASSES, IMAGE_SIZE, preprocess_inception, _lazy_builder(module, function)
        ))


# The organisers' TF-slim architectures; one line each (a module missing from this tree is skipped).
_register_tf_slim("inception_v3", "inception_v3", "build_inception_v3_logits", "InceptionV3", "Inception V3 (Szegedy et al. 2015, arXiv 1512.00567)")
_register_tf_slim("inception_v4", "inception_v4", "build_inception_v4_logits", "InceptionV4", "Inception V4 (Szegedy et al. 2016, arXiv 1602.07261)")
_register_tf_slim("inception_resnet_v2", "inception_resnet_v2", "build_inception_resnet_v2_logits", "InceptionResnetV2",
                  "Inception-ResNet-v2 (Szegedy et al. 2016, arXiv 1602.07261)")
_register_tf_slim("resnet_v2_101", "resnet_v2", "build_resnet_v2_101_logits", "resnet_v2_101", "ResNet-v2 101 (He et al. 2016, arXiv 1603.05027)")
_register_tf_slim("resnet_v2_152", "resnet_v2", "build_resnet_v2_152_logits", "resnet_v2_152", "ResNet-v2 152 (He et al. 2016, arXiv 1603.05027)")

# EfficientNet-Lite (Tan & Le 2019, arXiv 1905.11946; the Lite variants of the TF model garden):
# 1000 classes, the competition's 299x299 image as is.
for _lite in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
    register_architecture(Architecture(
        _lite, f"EfficientNet-Lite{_lite[-1]} (Tan & Le 2019, arXiv 1905.11946)", _lite, NUM_LABELS, IMAGE_SIZE,
        preprocess_efficientnet_lite, _lazy_builder("efficientnet_lite", "build_efficientnet_lite_logits", variant=_lite),
    ))
