"""Attacks: the sign-gradient loop (``sign_gradient.py``) and the folder-level job (``directory.py``)."""

from .directory import OutputDirError, attack_directory
from .sign_gradient import (
    METHODS,
    SignGradientConfig,
    method_config,
    method_spec_config,
    parse_method_spec,
    sign_gradient_attack,
)

__all__ = ["METHODS", "OutputDirError", "SignGradientConfig", "attack_directory", "method_config", "method_spec_config",
           "parse_method_spec", "sign_gradient_attack"]
