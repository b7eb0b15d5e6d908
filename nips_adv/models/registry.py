"""The model registry: a name binds how a network is built, fed, restored and read out.

Architectures register themselves in their own module (``inception_v3.py``...);
``nips_adv.models`` imports them all, so ``get_model_spec`` sees every model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoints import CHECKPOINT_DIR_VARIABLE, CheckpointError, checkpoint_dir, checkpoint_exists, normalise_checkpoint_path

if TYPE_CHECKING:
    import tensorflow as tf


class UnknownModelError(ValueError):
    """A model name that is not registered; the message lists the known ones."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs to know about one classifier.

    - ``preprocess``: ``(batch, size, size, 3)`` float32 pixels 0..255 -> the network's input range.
    - ``build_logits``: ``(network input, variable scope) -> (batch, num_classes)`` logits, built
      for inference (batch norm frozen); creates the variables under ``scope``.
    - ``num_classes``: 1001 (TF-slim, background class 0 first) or 1000 (label = index + 1).
    - ``default_checkpoint``: finds (or makes, for weights shipped with a package) the checkpoint
      prefix used when the user passes none; raises CheckpointError with a one-line how-to.
    """

    name: str
    description: str
    scope: str
    num_classes: int
    image_size: int
    preprocess: Callable[["tf.Tensor"], "tf.Tensor"]
    build_logits: Callable[["tf.Tensor", str], "tf.Tensor"]
    default_checkpoint: Callable[[], Path]

    @property
    def label_offset(self) -> int:
        """Logit columns to drop so that column i is label i + 1 (the background class, if any)."""
        return self.num_classes - 1000


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def find_checkpoint_in_dir(file_prefix: str, how_to_get: str) -> Path:
    """The prefix ``checkpoint_dir()/file_prefix`` if its ``.index`` exists, else a CheckpointError saying where we looked."""
    prefix = checkpoint_dir() / file_prefix
    if checkpoint_exists(prefix):
        return prefix
    raise CheckpointError(
        f"no checkpoint {prefix}.index (looked in ${CHECKPOINT_DIR_VARIABLE} or the cache folder); "
        f"{how_to_get}, or pass --checkpoint PREFIX"
    )


def resolve_checkpoint(spec: ModelSpec, checkpoint: Path | None) -> Path:
    """The checkpoint prefix to restore ``spec`` from: ``checkpoint`` when given, else the model's default."""
    if checkpoint is None:
        return spec.default_checkpoint()
    prefix = normalise_checkpoint_path(checkpoint)
    if not checkpoint_exists(prefix):
        raise CheckpointError(f"checkpoint {prefix} not found (no {prefix}.index)")
    return prefix
