"""A model by name: its catalogue entry joined with its architecture (what packaging and random-weight tools need).

The tables live in ``networks.py`` (architectures) and ``catalogue.py`` (weights); this is a view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract.constants import NUM_LABELS
from .catalogue import UnknownModelError, default_checkpoint, get_entry, list_models, prepare_weights
from .checkpoints import CheckpointError, checkpoint_exists, normalise_checkpoint_path
from .networks import Architecture, get_architecture

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["ModelSpec", "UnknownModelError", "get_model_spec", "list_models", "resolve_checkpoint"]


@dataclass(frozen=True)
class ModelSpec:
    """One model of the catalogue with its architecture (``networks.Architecture``), whose builders it
    exposes; ``scope`` is the variable scope in the model's checkpoint file."""

    name: str
    description: str
    scope: str
    num_classes: int
    network: Architecture

    @property
    def architecture(self) -> str:
        return self.network.name

    @property
    def image_size(self) -> int:
        return self.network.image_size

    @property
    def preprocess(self) -> Callable[["tf.Tensor"], "tf.Tensor"]:
        return self.network.preprocess

    @property
    def build_logits(self) -> Callable[["tf.Tensor", str], "tf.Tensor"]:
        return self.network.build_logits

    @property
    def label_offset(self) -> int:
        return self.num_classes - NUM_LABELS

    def default_checkpoint(self) -> Path:
        """The installed default checkpoint prefix (a lookup: never writes; see ``catalogue.prepare_weights``)."""
        return default_checkpoint(self.name)


def get_model_spec(name: str) -> ModelSpec:
    entry = get_entry(name)
    return ModelSpec(
        name=entry.name,
        description=entry.description,
        scope=entry.scope,
        num_classes=entry.num_classes,
        network=get_architecture(entry.architecture),
    )


def resolve_checkpoint(spec: ModelSpec, checkpoint: Path | None) -> Path:
    """The checkpoint prefix to restore ``spec`` from: ``checkpoint`` when given, else the model's default
    (converting packaged weights once: ``catalogue.prepare_weights``)."""
    if checkpoint is None:
        return prepare_weights(spec.name)
    prefix = normalise_checkpoint_path(checkpoint)
    if not checkpoint_exists(prefix):
        raise CheckpointError(f"checkpoint {prefix} not found (no {prefix}.index)")
    return prefix
