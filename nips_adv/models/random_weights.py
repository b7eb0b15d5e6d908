"""Random-weight checkpoints with a model's real variable names, for tests and benchmarks offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .registry import ModelSpec


def write_random_checkpoint(
    spec: ModelSpec,
    prefix: Path,
    *,
    seed: int = 0,
    build: Callable | None = None,
) -> Path:
    """Initialise ``spec``'s network with its own initializers and save it as a V2 checkpoint at ``prefix``.

    ``build(images, scope)`` overrides ``spec.build_logits`` (e.g. to include Inception V3's
    auxiliary head, so the file has the official variable set). Returns ``prefix``.
    """
    from .tf_compat import tf, tf1

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        images = tf1.placeholder(tf.float32, [None, spec.image_size, spec.image_size, 3])
        (build or spec.build_logits)(images, spec.scope)
        saver = tf1.train.Saver(var_list=tf1.global_variables())
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False, write_state=False)
    return prefix
