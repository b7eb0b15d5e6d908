"""Models: the registry (name -> build, preprocess, restore, labels) and the graph runtime.

Importing this package registers every architecture.
"""

from .checkpoints import CheckpointError, cache_dir, checkpoint_dir
from .registry import ModelSpec, UnknownModelError, get_model_spec, list_models, register_model, resolve_checkpoint

from . import inception_v3  # noqa: E402,F401  (registers inception_v3)
from . import efficientnet_lite  # noqa: E402,F401  (registers efficientnet_lite0/1/2)

__all__ = [
    "CheckpointError",
    "ModelSpec",
    "UnknownModelError",
    "cache_dir",
    "checkpoint_dir",
    "get_model_spec",
    "list_models",
    "register_model",
    "resolve_checkpoint",
]
