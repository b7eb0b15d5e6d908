"""The classifier: one or more networks in ONE TensorFlow graph and ONE session, their logits fused.

This module and the architectures are the only code with graphs, sessions and savers. Callers hand
in pixels as numpy arrays ``(batch, height, width, 3)``, uint8 or float 0..255, at any size (each
network sees them resized to its own input size), and get numpy back.

Each member network is built under its own graph scope (``m0/InceptionV3/...``, ``m1/InceptionV3/...``)
and restored from its own, original checkpoint file through a name map (graph name -> name in the
file), so two files of one architecture fit in one graph without renamed copies. The fused logits
are the weighted mean of the members' logits (``fusion="logits"``, as TSAIL's winning attack did:
Dong et al. 2018, arXiv 1710.06081) or the log of the weighted mean of their probabilities
(``fusion="probabilities"``). Losses and input transforms are the caller's (``gradient_function``):
the classifier knows nothing of attacks.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..contract.constants import NUM_LABELS
from .catalogue import ModelListError, UnknownModelError, get_entry, prepare_weights
from .checkpoints import CheckpointError, checkpoint_exists, normalise_checkpoint_path
from .layers import BackwardRule, backward_rule
from .networks import Architecture, get_architecture, list_architectures

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger("nips_adv")

PRECISIONS = ("float32", "bfloat16")
FUSIONS = ("logits", "probabilities")

__all__ = [
    "BackwardRule", "FUSIONS", "PRECISIONS", "Classifier", "Loss", "Member", "ModelListError", "Network", "Transform",
    "UnknownModelError", "parse_members", "resolve_networks",
]


class Transform(Protocol):
    """An input transform chosen by an attack or a defense (e.g. input diversity).

    ``transform(pixels)``: ``(B, H, W, 3)`` float32 0..255 tensor -> ``(copies * B, H', W', 3)`` in
    0..255, the copies stacked copy-major. Must be hashable by value (a frozen dataclass): the
    classifier compiles one graph per distinct (loss, transform) and reuses it.
    """

    copies: int
    name: str

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor": ...


Loss = Callable[["tf.Tensor", "tf.Tensor", "tf.Tensor"], "tf.Tensor"]
"""``loss(logits (N, 1000) float32, labels (N, K) int32 1..1000, weights (N, K) float32) -> scalar``."""


@dataclass(frozen=True)
class Member:
    """One entry of a model list: a catalogue model, its weight in the fusion, its checkpoint (None: the default)."""

    model: str
    weight: float = 1.0
    checkpoint: Path | None = None


@dataclass(frozen=True)
class Network:
    """A member ready to build: its architecture, the scope its variables have in ``checkpoint``, its weight."""

    name: str
    architecture: Architecture
    checkpoint: Path
    scope: str
    weight: float = 1.0


def parse_members(
    models: str | Sequence[str | Member],
    checkpoints: str | Path | Sequence[str | Path | None] | None = None,
) -> list[Member]:
    """Members from ``"name[:weight],name[:weight]"`` and ``"a.ckpt,,c.ckpt"`` (an empty entry: the default).

    Raises ModelListError (one line naming the value) for an unknown name, a weight that is not a
    positive number, or a checkpoint list of another length than the model list. Reads no file.
    """
    if isinstance(models, str):
        members = [_parse_member(part.strip(), models) for part in models.split(",")]
    else:
        members = [item if isinstance(item, Member) else _parse_member(str(item).strip(), str(item)) for item in models]
    if not members:
        raise ModelListError("the model list is empty")
    if checkpoints is None:
        return members
    if isinstance(checkpoints, Path):
        paths: list[str | Path | None] = [checkpoints]
    elif isinstance(checkpoints, str):
        paths = [part.strip() for part in checkpoints.split(",")]
    else:
        paths = list(checkpoints)
    if len(paths) != len(members):
        shown = checkpoints if isinstance(checkpoints, (str, Path)) else ",".join(str(path or "") for path in paths)
        raise ModelListError(
            f"{len(paths)} checkpoint(s) {str(shown)!r} for {len(members)} model(s) "
            f"{','.join(member.model for member in members)!r}: give one per model, in order (empty: the model's default)"
        )
    return [
        Member(member.model, member.weight, Path(path).expanduser() if path not in (None, "") else member.checkpoint)
        for member, path in zip(members, paths)
    ]


def _parse_member(text: str, whole: str) -> Member:
    name, _, weight_text = text.partition(":")
    name = name.strip()
    if not name:
        raise ModelListError(f"empty model name in the model list {whole!r}")
    get_entry(name)  # UnknownModelError lists the known ones
    if not _:
        return Member(name)
    try:
        weight = float(weight_text)
    except ValueError:
        weight = math.nan
    if not (weight > 0 and math.isfinite(weight)):
        raise ModelListError(f"weight {weight_text.strip()!r} of model {name} is not a positive number")
    return Member(name, weight)


def resolve_networks(members: Sequence[Member]) -> list[Network]:
    """Each member's architecture, scope and checkpoint prefix (the default one where none is given).

    Raises ModelListError when one checkpoint file is given for models of different architectures,
    CheckpointError when a given checkpoint is missing or a default one cannot be had. The check on the
    given files comes first, so bad input writes nothing (a default may be converted once afterwards).
    """
    entries = [get_entry(member.model) for member in members]
    given: dict[Path, tuple[str, str]] = {}
    for member, entry in zip(members, entries):
        if member.checkpoint is None:
            continue
        prefix = normalise_checkpoint_path(member.checkpoint)
        key = prefix.resolve()
        if key in given and given[key][1] != entry.architecture:
            raise ModelListError(
                f"checkpoint {prefix} is given for {given[key][0]} ({given[key][1]}) and {member.model} "
                f"({entry.architecture}), models of different architectures"
            )
        given.setdefault(key, (member.model, entry.architecture))
        if not checkpoint_exists(prefix):
            raise CheckpointError(f"checkpoint {prefix} not found (no {prefix}.index)")
    networks = []
    for member, entry in zip(members, entries):
        prefix = normalise_checkpoint_path(member.checkpoint) if member.checkpoint is not None else prepare_weights(member.model)
        networks.append(Network(member.model, get_architecture(entry.architecture), prefix, entry.scope, member.weight))
    return networks


class Classifier:
    """One or more networks in one graph and one session, fused into one classifier; numpy in and out.

    Pixels: ``(batch, height, width, 3)`` uint8 or float 0..255. Logits: ``(batch, 1000)`` float32,
    column i is label i + 1. Every call is one ``session.run`` for the whole ensemble.
    """

    def __init__(
        self,
        networks: Sequence[Network],
        *,
        precision: str = "float32",
        seed: int | None = None,
        fusion: str = "logits",
    ) -> None:
        from .tf_compat import tf, tf1

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
        if not networks:
            raise ValueError("a classifier needs at least one network")
        if any(not (network.weight > 0 and math.isfinite(network.weight)) for network in networks):
            raise ValueError(f"weights must be positive numbers, got {[network.weight for network in networks]}")
        self._networks = tuple(networks)
        total = sum(network.weight for network in networks)
        self._weights = tuple(network.weight / total for network in networks)
        self.precision = precision
        self.fusion = fusion
        self._gradients: dict[tuple[Any, Any, Any], Any] = {}
        self._logits_by_transform: dict[Any, Any] = {}
        self._rule_free: set[str] = set()  # members a backward rule was asked of and found nothing to apply to

        # Gradients are added to the graph after the session has run it (one per loss and transform);
        # a tf.cond run before then must already output the intermediates its gradient will read.
        tf1.experimental.output_all_intermediates(True)
        self._graph = tf.Graph()
        with self._graph.as_default():
            if seed is not None:
                tf1.set_random_seed(seed)
            self._pixels = tf1.placeholder(tf.float32, [None, None, None, 3], name="pixels")
            self._labels = tf1.placeholder(tf.int32, [None, None], name="labels")
            self._label_weights = tf1.placeholder(tf.float32, [None, None], name="label_weights")
            members = self._build_members(self._pixels)
            self._member_logits = tf.stack(members)
            self._logits = self._fuse(members)
            self._savers = [self._saver(index, network) for index, network in enumerate(self._networks)]
        self._session = self._restored_session(precision)

    def _restored_session(self, precision: str) -> Any:
        """A session on the graph with ``precision``'s configuration, every member's weights restored."""
        from .tf_compat import tf, tf1

        session = tf1.Session(graph=self._graph, config=_session_config(precision))
        try:
            with self._graph.as_default():
                for saver, network in zip(self._savers, self._networks):
                    saver.restore(session, str(network.checkpoint))
        except (tf.errors.OpError, ValueError) as error:
            session.close()
            first_line = str(getattr(error, "message", error)).strip().splitlines()[0]
            raise CheckpointError(f"cannot restore {network.name} from {network.checkpoint}: {first_line}") from None
        return session

    def reopen(self, precision: str) -> None:
        """Run the same graph in ``precision`` from now on: a new session, the weights restored again (a second
        or so); its graphs compile again on their first run. Used to time both precisions on one machine."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if precision == self.precision:
            return
        session = self._restored_session(precision)
        self._session.close()
        self._session, self.precision = session, precision

    @classmethod
    def create(
        cls,
        models: str | Sequence[str | Member],
        checkpoints: str | Path | Sequence[str | Path | None] | None = None,
        *,
        precision: str = "float32",
        seed: int | None = None,
        fusion: str = "logits",
    ) -> "Classifier":
        """A classifier of ``models`` (``"a,b:0.5"`` or Members), each from its checkpoint (``"p1,,p3"``; None or an
        empty entry: the model's default from the catalogue, converted once where it ships in a package).

        Raises ModelListError (bad list), UnknownModelError, CheckpointError (missing file, another architecture's file).
        """
        return cls(resolve_networks(parse_members(models, checkpoints)), precision=precision, seed=seed, fusion=fusion)

    @property
    def names(self) -> tuple[str, ...]:
        """The members' model names, in order."""
        return tuple(network.name for network in self._networks)

    @property
    def weights(self) -> tuple[float, ...]:
        """The members' fusion weights, normalised to sum to 1."""
        return self._weights

    @property
    def networks(self) -> tuple[Network, ...]:
        return self._networks

    @property
    def input_side(self) -> int:
        """The largest input side among the members: what the ensemble sees of any image, at most."""
        return max(network.architecture.image_size for network in self._networks)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """``(batch, 1000)`` float32 fused logits; column i is label i + 1."""
        return self._session.run(self._logits, {self._pixels: _as_float_pixels(pixels)})

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """``(batch,)`` int64 labels 1..1000 (the argmax of the fused logits)."""
        return np.argmax(self.logits(pixels), axis=1) + 1

    def member_logits(self, pixels: np.ndarray) -> np.ndarray:
        """``(members, batch, 1000)`` float32: each member's own logits, before fusion."""
        return self._session.run(self._member_logits, {self._pixels: _as_float_pixels(pixels)})

    def gradient_function(
        self, loss: Loss, transform: Transform | None = None, *, backward: BackwardRule | None = None
    ) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]:
        """``fn(pixels, labels, weights) -> gradient`` of ``loss`` on the fused logits w.r.t. the pixels.

        ``labels``: ``(batch,)`` or ``(batch, K)`` ints 1..1000; ``weights`` the same shape (None: ones).
        The gradient has the shape of ``pixels``, float32, pixel units. With a ``transform``, the
        members see its copies (each resized to the member's input size) and the labels and weights
        are tiled once per copy; the gradient flows back through it. With a ``backward`` rule the
        members are built again for this gradient, their residual blocks and ReLUs following it
        (``layers.BackwardRule``: SGM, LinBP, ghost networks). Compiled on the first call for each
        (loss, transform, backward) and reused; every call is one ``session.run``.
        """
        backward = None if backward is None or backward.is_identity else backward
        key = (loss, transform, backward)
        if key not in self._gradients:
            from .tf_compat import tf

            with self._graph.as_default():
                copies = 1 if transform is None else int(transform.copies)
                inputs = self._pixels if transform is None else transform(self._pixels)
                rebuilt = transform is not None or backward is not None
                logits = self._fuse(self._build_members(inputs, backward=backward)) if rebuilt else self._logits
                labels = tf.tile(self._labels, [copies, 1])
                weights = tf.tile(self._label_weights, [copies, 1])
                self._gradients[key] = tf.gradients(loss(logits, labels, weights), self._pixels)[0]
        gradient = self._gradients[key]

        def gradient_of(pixels: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
            pixels = _as_float_pixels(pixels)
            labels, weights = _labels_and_weights(labels, weights, len(pixels))
            feed = {self._pixels: pixels, self._labels: labels, self._label_weights: weights}
            return self._session.run(gradient, feed)

        return gradient_of

    def logits_function(self, transform: Transform | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """``fn(pixels) -> (copies, batch, 1000)`` fused logits of each copy ``transform`` makes (1 copy: none)."""
        if transform not in self._logits_by_transform:
            from .tf_compat import tf

            with self._graph.as_default():
                copies = 1 if transform is None else int(transform.copies)
                logits = self._logits if transform is None else self._fuse(self._build_members(transform(self._pixels)))
                self._logits_by_transform[transform] = tf.reshape(logits, [copies, -1, NUM_LABELS])
        tensor = self._logits_by_transform[transform]
        return lambda pixels: self._session.run(tensor, {self._pixels: _as_float_pixels(pixels)})

    def fused_logits_tensor(self, pixels: "tf.Tensor") -> "tf.Tensor":
        """``(N, 1000)`` fused logits of a pixels tensor of ``self.graph`` (variables shared), for callers
        that build on the classifier in its graph (e.g. training a denoiser in front of it)."""
        with self._graph.as_default():
            return self._fuse(self._build_members(pixels))

    @property
    def graph(self) -> "tf.Graph":
        return self._graph

    @property
    def session(self) -> Any:
        return self._session

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    # --- graph construction --------------------------------------------------------------------

    def _build_members(self, pixels: "tf.Tensor", *, backward: BackwardRule | None = None) -> list["tf.Tensor"]:
        """Each member's ``(N, 1000)`` float32 logits on ``pixels``; variables shared with earlier builds.
        ``backward``: the rule their residual blocks and ReLUs follow (None: their own gradient)."""
        from .tf_compat import tf, tf1

        logits = []
        for index, network in enumerate(self._networks):
            architecture = network.architecture
            # AUTO_REUSE: building a member again (on a transform's copies) shares its variables.
            with tf1.variable_scope(_graph_scope(index), reuse=tf1.AUTO_REUSE), backward_rule(backward) as in_use:
                images = architecture.preprocess(_resize_to(pixels, architecture.image_size))
                raw = architecture.build_logits(images, network.scope)
            if backward is not None and in_use.applied == 0 and network.name not in self._rule_free:
                self._rule_free.add(network.name)  # said once: each new copy transform compiles the members again
                logger.warning("%s has no residual block or ReLU the backward rule %s applies to: its gradient is its own",
                               network.name, backward)
            logits.append(tf.cast(raw[:, architecture.label_offset :], tf.float32))
        return logits

    def _fuse(self, members: list["tf.Tensor"]) -> "tf.Tensor":
        from .tf_compat import tf

        if self.fusion == "logits":
            if len(members) == 1:
                return members[0]
            return tf.add_n([weight * logits for weight, logits in zip(self._weights, members)])
        # log sum_i w_i softmax(z_i), computed stably in log space.
        weighted = [tf.nn.log_softmax(logits) + math.log(weight) for weight, logits in zip(self._weights, members)]
        return tf.reduce_logsumexp(tf.stack(weighted), axis=0)

    def _saver(self, index: int, network: Network):
        """A Saver restoring member ``index``'s graph variables from the names they have in its file."""
        from .tf_compat import tf, tf1

        prefix = f"{_graph_scope(index)}/"
        variables = [variable for variable in tf1.global_variables() if variable.op.name.startswith(prefix)]
        name_map = {variable.op.name[len(prefix) :]: variable for variable in variables}
        try:
            in_file = tf1.train.NewCheckpointReader(str(network.checkpoint)).get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError) as error:
            first_line = str(getattr(error, "message", error)).strip().splitlines()[0]
            raise CheckpointError(f"cannot read checkpoint {network.checkpoint}: {first_line}") from None
        missing = [name for name in name_map if name not in in_file]
        wrong = [name for name, variable in name_map.items() if name in in_file and list(in_file[name]) != variable.shape.as_list()]
        if missing or wrong:
            raise CheckpointError(
                f"checkpoint {network.checkpoint} does not hold {network.name} ({network.architecture.name}, variables "
                f"under '{network.scope}/'): {_what_it_holds(in_file, network.scope, missing, wrong)}"
            )
        return tf1.train.Saver(var_list=name_map)


def _graph_scope(index: int) -> str:
    return f"m{index}"


def _what_it_holds(in_file: dict[str, list[int]], scope: str, missing: list[str], wrong: list[str]) -> str:
    """What a checkpoint holds, in a few words: the architectures whose default scope it has, else its scopes."""
    scopes = sorted({name.split("/", 1)[0] for name in in_file if "/" in name})
    if scope in scopes:
        example = (missing or wrong)[0]
        return f"{len(missing)} of its variables are missing and {len(wrong)} have other shapes (e.g. {example})"
    known = [name for name in list_architectures() if get_architecture(name).default_scope in scopes]
    if known:
        return f"it holds a {' or '.join(known)} checkpoint"
    return f"it holds variables under {', '.join(repr(s + '/') for s in scopes[:5]) or 'no scope'}"


def _labels_and_weights(labels: np.ndarray, weights: np.ndarray | None, batch: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    labels = labels[:, None] if labels.ndim == 1 else labels
    if labels.ndim != 2 or len(labels) != batch or labels.min(initial=1) < 1 or labels.max(initial=1) > NUM_LABELS:
        raise ValueError(f"labels must be {batch} rows of integers 1..{NUM_LABELS}")
    weights = np.ones(labels.shape, np.float32) if weights is None else np.asarray(weights, np.float32).reshape(labels.shape)
    return labels.astype(np.int32), weights


def _as_float_pixels(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[3] != 3:
        raise ValueError(f"expected pixels of shape (batch, height, width, 3), got {pixels.shape}")
    return pixels.astype(np.float32, copy=False)


def _session_config(precision: str):
    from tensorflow.core.protobuf import rewriter_config_pb2

    from .tf_compat import tf1

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


def _resize_to(pixels: "tf.Tensor", size: int) -> "tf.Tensor":
    """Bilinear (antialiased) resize to ``size`` x ``size`` unless the input already has that size."""
    from .tf_compat import tf

    static = pixels.shape[1:3].as_list()
    if static == [size, size]:
        return pixels
    spatial = tf.shape(pixels)[1:3]
    resized = tf.cond(
        tf.reduce_all(tf.equal(spatial, [size, size])),
        lambda: pixels,
        lambda: tf.image.resize(pixels, [size, size], method="bilinear", antialias=True),
    )
    resized.set_shape([None, size, size, 3])
    return resized
