"""The graph runtime: one restored model in its own TensorFlow graph and session.

This is the only module that touches graphs, sessions, placeholders and savers. Callers hand in
pixels as numpy arrays ``(batch, height, width, 3)``, uint8 or float 0..255, at any size, and get
numpy back: logits in label order (column i is label i + 1), labels 1..1000, or the gradient of
a loss (cross-entropy or logit margin) with respect to the pixels. The network is built once per
Classifier; every call is one ``session.run``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType

import numpy as np

from ..contract.constants import NUM_LABELS
from .checkpoints import CheckpointError
from .registry import ModelSpec, get_model_spec, resolve_checkpoint

logger = logging.getLogger("nips_adv")

PRECISIONS = ("float32", "bfloat16")
LOSSES = ("cross-entropy", "margin")
"""What ``loss_gradient`` can differentiate; both measure how far an image is from being its label(s):

- ``cross-entropy``: -log p(label), in float64;
- ``margin``: the best logit outside the labels minus the label's logit (Carlini & Wagner's margin,
  uncapped). It does not saturate with the softmax, and only the strongest rival counts.
"""
DEFAULT_DIVERSITY_SCALE = 330 / 299
"""Input diversity pads to this multiple of the model's input size (Xie et al.: 299 -> 330)."""


class Classifier:
    """A model of the registry, restored from a checkpoint, ready to classify and differentiate."""

    def __init__(self, spec: ModelSpec, checkpoint: Path, *, precision: str = "float32", seed: int | None = None) -> None:
        from .tf_compat import tf, tf1

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.spec = spec
        self.checkpoint = Path(checkpoint)
        self.precision = precision
        scope = _scope_in_checkpoint(spec, self.checkpoint)

        self._graph = tf.Graph()
        with self._graph.as_default():
            if seed is not None:
                tf1.set_random_seed(seed)
            self._pixels = tf1.placeholder(tf.float32, [None, None, None, 3], name="pixels")
            # Labels 1..1000, one or more per image, each with a weight. Unfed, they are the model's
            # own top classes weighted by its probabilities, taken in the same pass: a non-targeted
            # attack needs no separate forward pass to choose them.
            self._labels = tf1.placeholder_with_default(tf.zeros([1, 1], tf.int32), [None, None], name="labels")
            self._label_weights = tf1.placeholder_with_default(tf.ones([1, 1]), [None, None], name="label_weights")
            self._use_own_labels = tf1.placeholder_with_default(True, [], name="use_own_labels")
            self._own_classes = tf1.placeholder_with_default(1, [], name="own_classes")
            self._use_margin = tf1.placeholder_with_default(False, [], name="use_margin")
            self._diversity_prob = tf1.placeholder_with_default(0.0, [], name="diversity_prob")
            self._diversity_scale = tf1.placeholder_with_default(DEFAULT_DIVERSITY_SCALE, [], name="diversity_scale")
            model_pixels = _resize_to(self._pixels, spec.image_size)
            model_pixels = _input_diversity(model_pixels, spec.image_size, self._diversity_prob, self._diversity_scale)
            logits = spec.build_logits(spec.preprocess(model_pixels), scope)
            self._logits = tf.cast(logits[:, spec.label_offset :], tf.float32)
            # In float64: once an attack makes a class's float32 probability round to exactly 1, the
            # float32 gradient of its log-probability loses the term that raises that class's logit
            # (1 - p = 0), which targeted attacks reach within their 20 iterations.
            log_probabilities = tf.nn.log_softmax(tf.cast(self._logits, tf.float64))
            own = tf.math.top_k(log_probabilities, k=self._own_classes, sorted=True)
            own_weights = tf.cast(tf.nn.softmax(own.values), tf.float32)  # renormalised over the top classes
            self._used_labels, self._used_weights = tf.cond(
                self._use_own_labels,
                lambda: (own.indices + 1, tf.stop_gradient(own_weights)),
                lambda: (self._labels, self._label_weights),
            )
            # Per image and label, how far the image is from being that label; weighted and summed.
            # With one label of weight 1, the usual cross-entropy or margin.
            label_columns = self._used_labels - 1

            def margin():
                logits64 = tf.cast(self._logits, tf.float64)
                is_label = tf.reduce_any(tf.one_hot(label_columns, NUM_LABELS, on_value=True, off_value=False), axis=1)
                best_rival = tf.reduce_max(tf.where(is_label, tf.float64.min, logits64), axis=1, keepdims=True)
                return best_rival - tf.gather(logits64, label_columns, batch_dims=1)

            def cross_entropy():
                return -tf.gather(log_probabilities, label_columns, batch_dims=1)

            distance = tf.cond(self._use_margin, margin, cross_entropy)
            loss = tf.reduce_sum(tf.cast(self._used_weights, tf.float64) * distance)
            self._gradient = tf.gradients(loss, self._pixels)[0]
            variables = tf1.global_variables()
            saver = tf1.train.Saver(var_list=variables)
            self._graph.finalize()
        self._session = tf1.Session(graph=self._graph, config=_session_config(precision))
        try:
            with self._graph.as_default():
                saver.restore(self._session, str(self.checkpoint))
        except (tf.errors.OpError, ValueError) as error:
            self._session.close()
            first_line = str(getattr(error, "message", error)).strip().splitlines()[0]
            raise CheckpointError(f"cannot restore {spec.name} from {self.checkpoint}: {first_line}") from None

    @classmethod
    def create(
        cls, model_name: str, checkpoint: Path | None = None, *, precision: str = "float32", seed: int | None = None
    ) -> "Classifier":
        """Build ``model_name`` from the registry and restore ``checkpoint`` (default: the model's own)."""
        spec = get_model_spec(model_name)
        return cls(spec, resolve_checkpoint(spec, checkpoint), precision=precision, seed=seed)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """``(batch, 1000)`` float32 logits for pixels 0..255; column i is label i + 1."""
        return self._session.run(self._logits, {self._pixels: _as_float_pixels(pixels)})

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """``(batch,)`` int64 labels 1..1000 (the argmax)."""
        return np.argmax(self.logits(pixels), axis=1) + 1

    def own_labels(self, pixels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The model's top ``count`` labels per image, highest first, and their renormalised probabilities."""
        return own_labels(self.logits(pixels), count)

    def loss_gradient(
        self,
        pixels: np.ndarray,
        labels: np.ndarray | None,
        *,
        weights: np.ndarray | None = None,
        own_classes: int = 1,
        loss: str = "cross-entropy",
        diversity_prob: float = 0.0,
        diversity_scale: float = DEFAULT_DIVERSITY_SCALE,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradient of the weighted loss w.r.t. the pixels, with the labels and weights used.

        The loss is the sum of ``weights * distance(label)`` over images and their labels, the
        distance being ``-log p(label)`` (``loss="cross-entropy"``) or, for ``loss="margin"``, the
        highest logit of a class outside the image's labels minus the label's logit (see LOSSES).
        ``labels``: ``(batch,)`` or ``(batch, k)`` ints 1..1000, ``weights`` of the same shape
        (default all 1); or None for the model's top ``own_classes`` classes on ``pixels``,
        weighted by its probabilities renormalised over them (computed in the same pass; with
        one class, the usual cross-entropy of its prediction). Labels and weights come back as
        ``(batch, k)``, ready to pass again. The gradient has the shape of ``pixels``, float32,
        in pixel units. With ``diversity_prob`` > 0 the model sees, with that probability, a
        randomly resized and padded copy (input diversity, one draw per call); the gradient
        flows back through that transform and through the resize to the model's input size.
        """
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
        feed = {
            self._pixels: _as_float_pixels(pixels),
            self._use_margin: loss == "margin",
            self._diversity_prob: float(diversity_prob),
            self._diversity_scale: float(diversity_scale),
        }
        if labels is None:
            if not 1 <= own_classes <= NUM_LABELS:
                raise ValueError(f"own_classes must be 1..{NUM_LABELS}, got {own_classes}")
            feed[self._own_classes] = int(own_classes)
        else:
            labels = np.asarray(labels, dtype=np.int32)
            labels = labels[:, None] if labels.ndim == 1 else labels
            if labels.ndim != 2 or len(labels) != len(pixels) or labels.min(initial=1) < 1 or labels.max(initial=1) > NUM_LABELS:
                raise ValueError(f"labels must be {len(pixels)} rows of integers 1..{NUM_LABELS}")
            weights = np.ones(labels.shape, np.float32) if weights is None else np.asarray(weights, np.float32).reshape(labels.shape)
            feed.update({self._labels: labels, self._label_weights: weights, self._use_own_labels: False})
        gradient, used_labels, used_weights = self._session.run(
            [self._gradient, self._used_labels, self._used_weights], feed
        )
        return gradient, used_labels.astype(np.int64), used_weights

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


def own_labels(logits: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(batch, count)`` labels 1..1000 of the ``count`` highest of ``(batch, 1000)`` logits, highest
    first, and their probabilities renormalised over those ``count`` (what ``loss_gradient`` uses)."""
    indices = np.argsort(-logits, axis=1, kind="stable")[:, :count]
    top = np.take_along_axis(logits, indices, axis=1).astype(np.float64)
    weights = np.exp(top - top[:, :1])
    return indices + 1, (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _as_float_pixels(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[3] != 3:
        raise ValueError(f"expected pixels of shape (batch, height, width, 3), got {pixels.shape}")
    return pixels.astype(np.float32, copy=False)


def _session_config(precision: str):
    from .tf_compat import tf1
    from tensorflow.core.protobuf import rewriter_config_pb2

    config = tf1.ConfigProto()
    config.gpu_options.allow_growth = True
    threads = os.environ.get("NIPS_ADV_THREADS")
    if threads:
        config.intra_op_parallelism_threads = int(threads)
    if precision == "bfloat16":
        if not cpu_has_bfloat16():
            logger.warning("this CPU reports no bfloat16 units (avx512_bf16/amx_bf16): bfloat16 will be emulated, likely slower")
        # oneDNN's graph rewrite runs convolutions and matmuls in bfloat16 on CPUs that support it.
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    return config


def cpu_has_bfloat16() -> bool:
    """Whether the CPU advertises bfloat16 arithmetic (Linux /proc/cpuinfo); True where it cannot tell."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return "bf16" in flags  # x86 avx512_bf16 / amx_bf16, Arm bf16


def _resize_to(pixels, size: int):
    """Bilinear (antialiased) resize to ``size`` x ``size`` unless the input already has that size."""
    from .tf_compat import tf

    spatial = tf.shape(pixels)[1:3]
    resized = tf.cond(
        tf.reduce_all(tf.equal(spatial, [size, size])),
        lambda: pixels,
        lambda: tf.image.resize(pixels, [size, size], method="bilinear", antialias=True),
    )
    resized.set_shape([None, size, size, 3])
    return resized


def _input_diversity(pixels, size: int, probability, scale):
    """Xie et al.'s input diversity: with ``probability``, resize to a random side in [size, size*scale),
    pad randomly to size*scale, and resize back to ``size`` so every model keeps its input shape."""
    from .tf_compat import tf

    def diversify():
        padded_size = tf.cast(tf.round(size * scale), tf.int32)
        side = tf.random.uniform([], size, tf.maximum(padded_size, size + 1), dtype=tf.int32)
        rescaled = tf.image.resize(pixels, [side, side], method="nearest")
        room = padded_size - side
        top = tf.random.uniform([], 0, room + 1, dtype=tf.int32)
        left = tf.random.uniform([], 0, room + 1, dtype=tf.int32)
        padded = tf.pad(rescaled, [[0, 0], [top, room - top], [left, room - left], [0, 0]])
        return tf.image.resize(padded, [size, size], method="bilinear")

    diverse = tf.cond(tf.random.uniform([]) < probability, diversify, lambda: pixels)
    diverse.set_shape([None, size, size, 3])
    return diverse


def _scope_in_checkpoint(spec: ModelSpec, checkpoint: Path) -> str:
    """The variable scope to build ``spec`` under so that its variables match ``checkpoint``.

    Normally ``spec.scope``; a copy renamed by ``nips-adv download checkpoint --scope`` is
    recognised by its top-level scope. A checkpoint of another model fails here, with one line.
    """
    from .tf_compat import tf

    try:
        reader = tf.compat.v1.train.NewCheckpointReader(str(checkpoint))
    except (tf.errors.OpError, ValueError) as error:
        first_line = str(getattr(error, "message", error)).strip().splitlines()[0]
        raise CheckpointError(f"cannot read checkpoint {checkpoint}: {first_line}") from None
    scopes = sorted({name.split("/", 1)[0] for name in reader.get_variable_to_shape_map()})
    if spec.scope in scopes:
        return spec.scope
    if len(scopes) == 1 and any(name.startswith(f"{scopes[0]}/") for name in reader.get_variable_to_shape_map()):
        holds = scopes[0]
        if _looks_like(spec, reader, holds):
            return holds
    raise CheckpointError(
        f"checkpoint {checkpoint} is not a {spec.name} checkpoint: it has no variables under "
        f"'{spec.scope}/' (it holds {', '.join(repr(s) for s in scopes[:5]) or 'no variables'})"
    )


def _looks_like(spec: ModelSpec, reader, scope: str) -> bool:
    """Whether the checkpoint's variables under ``scope`` carry the names ``spec`` builds under its own scope."""
    from .tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [1, spec.image_size, spec.image_size, 3])
        spec.build_logits(images, spec.scope)
        expected = {variable.op.name.split("/", 1)[1] for variable in tf1.global_variables()}
    present = {name.split("/", 1)[1] for name in reader.get_variable_to_shape_map() if name.startswith(f"{scope}/")}
    return expected <= present
