"""nips_adv: attacks, defense, submissions and evaluation for the NIPS 2017 adversarial competition.

Layout (one room per concern):
- ``contract``: the competition's formats and limits (PNG I/O and image names, epsilon box, CSVs,
  class names, constants; ``atomic``, the one atomic file writer).
- ``models``: architectures, the weights catalogue and the classifier (the only place with sessions).
- ``attacks``: the one sign-gradient loop and the attack folder job.
- ``defenses``: input transforms, the denoiser, recipes and the defense folder job.
- ``jobs``: what the folder jobs share (batches, progress, JobReport, the time budget).
- ``evaluation``: accuracy on a folder and the organisers' attack-versus-defense evaluation.
- ``submission``: packaging, validating and running submissions; ``archives`` their zip/tar files.
- ``download``: datasets and reference checkpoints.
- ``apps``: applications of the library: the demo and the bench.
- ``cli``: thin click shells over the library.
- ``api``: ``attack`` and ``classify``, numpy in and out, for notebooks; the objects below are the
  ones they use, importable from here (loaded on first use: importing nips_adv does not import TensorFlow).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "attack": "api",
    "classify": "api",
    "Classifier": "models.classifier",
    "DefendedClassifier": "defenses.recipes",
    "parse_recipe": "defenses.recipes",
    "sign_gradient_attack": "attacks.sign_gradient",
    "SignGradientConfig": "attacks.sign_gradient",
    "METHODS": "attacks.sign_gradient",
    "method_config": "attacks.sign_gradient",
    "method_table": "attacks.sign_gradient",
    "attack_directory": "attacks.directory",
    "classify_directory": "defenses.directory",
    "list_models": "models.catalogue",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nips_adv' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
