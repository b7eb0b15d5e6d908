"""The one place that imports TensorFlow and tf-slim and adapts tf-slim 1.1 to TensorFlow 2.

Everything else imports ``tf`` and ``slim`` from here, so the adjustments apply exactly once:
- tf-slim still refers to ``tensorflow.python.framework.ops.Tensor``, which moved to
  ``tensor.Tensor``;
- the models are built in ``tf.compat.v1`` graph mode (tf-slim's layers need it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

# Quiet unless the caller set TF_CPP_MIN_LOG_LEVEL before importing this module (the CLIs' --verbose sets 0).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _native_stderr_silenced(silence: bool):
    """Drop what native code writes to fd 2 (absl's pre-init lines such as 'Could not find cuda
    drivers' ignore TF_CPP_MIN_LOG_LEVEL); Python exceptions still surface after the block."""
    if not silence:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced(os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"):
    import tensorflow as tf  # noqa: E402
    from tensorflow.python.framework import ops as _ops  # noqa: E402
    from tensorflow.python.framework import tensor as _tensor  # noqa: E402

    if not hasattr(_ops, "Tensor"):
        _ops.Tensor = _tensor.Tensor
    import tf_slim as slim  # noqa: E402

if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

tf1 = tf.compat.v1

# tf-slim 1.1 calls the deprecated ``layer.apply``; the warning is tf-slim's, not our users'.
warnings.filterwarnings("ignore", message=".*layer.apply.*is deprecated", category=UserWarning)

__all__ = ["tf", "tf1", "slim"]
