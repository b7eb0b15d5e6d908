"""Models: architectures (``networks``), the weights catalogue (``catalogue``) and the classifier
(``classifier``: one graph, one session, one or more networks). Importing this package does not import TensorFlow."""

from .catalogue import CatalogueEntry, ModelListError, UnknownModelError, get_entry, list_models, prepare_weights
from .checkpoints import CheckpointError, cache_dir, checkpoint_dir
from .networks import Architecture, get_architecture, list_architectures
from .registry import ModelSpec, get_model_spec, resolve_checkpoint

__all__ = [
    "Architecture",
    "CatalogueEntry",
    "CheckpointError",
    "ModelListError",
    "ModelSpec",
    "UnknownModelError",
    "cache_dir",
    "checkpoint_dir",
    "get_architecture",
    "get_entry",
    "get_model_spec",
    "list_architectures",
    "list_models",
    "prepare_weights",
    "resolve_checkpoint",
]
