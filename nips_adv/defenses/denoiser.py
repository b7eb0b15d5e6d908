"""A small HGD-style denoiser put in front of the classifiers (TF1 graph mode).

High-level representation guided denoiser (Liao, Liang, Dong, Pang, Hu & Zhu 2018, arXiv
1712.02976; first place in the NIPS 2017 defense track): a U-Net predicts the adversarial noise,
the denoised image is the input minus that prediction, and training matches the classifier's
response on denoised adversarial images to its response on the clean ones, here the logits
(the paper's logit-guided variant, LGD): ``mean |logits(denoise(adv)) - logits(clean)|``.

This one is small so it runs on CPU at 299x299 next to the classifiers: three levels of two 3x3
convolutions (16, 32, 64 channels, stride-2 downsampling; 118,691 parameters, 0.5 MB in float32),
bilinear upsampling with skip connections, ReLU, no normalisation (training and inference compute
the same function), and a zero-initialised last layer, so an untrained denoiser is the identity.
A four-level variant adds a 128-channel level at an eighth of the resolution, whose decoder is added
to level 3 through a zero-initialised layer (487,715 parameters): trained three-level weights grow
into it as the same function. Weights live in one ``.npz`` with an architecture tag and a format version.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

FORMAT_VERSION = 1
"""The layout of the ``.npz``: one array per layer parameter, plus the architecture tag and this version."""
_TAG_KEY, _VERSION_KEY = "__architecture__", "__version__"


@dataclass(frozen=True)
class DenoiserArchitecture:
    """A denoiser's layers, each ``(name, input channels, output channels)``, a 3x3 convolution with a bias."""

    tag: str
    layers: tuple[tuple[str, int, int], ...]
    levels: int

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name (relative to the denoiser's scope) and shape."""
        return {
            **{f"{name}/kernel": (3, 3, inputs, outputs) for name, inputs, outputs in self.layers},
            **{f"{name}/bias": (outputs,) for name, inputs, outputs in self.layers},
        }

    def grows_into(self, other: "DenoiserArchitecture") -> bool:
        """Whether weights of this architecture fill a part of ``other`` (itself, or three levels into four)."""
        return set(self.parameter_shapes) <= set(other.parameter_shapes)


_UNET3_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("encoder1/conv1", 3, 16),
    ("encoder1/conv2", 16, 16),
    ("encoder2/conv1", 16, 32),  # stride 2
    ("encoder2/conv2", 32, 32),
    ("encoder3/conv1", 32, 64),  # stride 2
    ("encoder3/conv2", 64, 64),
    ("decoder2/conv1", 64 + 32, 32),
    ("decoder2/conv2", 32, 32),
    ("decoder1/conv1", 32 + 16, 16),
    ("decoder1/conv2", 16, 16),
    ("noise", 16, 3),
)
_CONTEXT_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("encoder4/conv1", 64, 128),  # stride 2
    ("encoder4/conv2", 128, 128),
    ("decoder3/conv1", 128 + 64, 64),
    ("decoder3/conv2", 64, 64),  # zero-initialised and added to level 3: the branch starts switched off
)
UNET3 = DenoiserArchitecture("hgd-unet3-16-32-64", _UNET3_LAYERS, levels=3)
UNET4 = DenoiserArchitecture("hgd-unet4-16-32-64-128", _UNET3_LAYERS + _CONTEXT_LAYERS, levels=4)
ARCHITECTURES: dict[str, DenoiserArchitecture] = {architecture.tag: architecture for architecture in (UNET3, UNET4)}
"""Every denoiser a weights file may hold, by the tag it carries. A fourth level only adds parameters, so
weights of the three-level one grow into it unchanged (``load_denoiser_weights``): the same function at first."""
ARCHITECTURE = UNET3.tag
"""The architecture a denoiser is built with when neither weights nor a tag say otherwise."""
PARAMETER_SHAPES = ARCHITECTURES[ARCHITECTURE].parameter_shapes
"""The default architecture's parameter names and shapes."""


class DenoiserWeightsError(Exception):
    """A denoiser weights file that is missing, unreadable or of another architecture (one line, names the file)."""


def architecture_of(parameters: Mapping[str, object]) -> DenoiserArchitecture:
    """The architecture whose parameter names are exactly those given (weights or variables by name)."""
    names = set(parameters)
    for architecture in ARCHITECTURES.values():
        if names == set(architecture.parameter_shapes):
            return architecture
    raise ValueError(f"no denoiser architecture has exactly these {len(names)} parameters")


def build_denoiser(
    pixels: "tf.Tensor",
    scope: str = "denoiser",
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    architecture: str | None = None,
) -> "tf.Tensor":
    """Denoise ``pixels`` ``(B, H, W, 3)`` float32 0..255 -> ``(B, H, W, 3)`` float32 0..255, any H, W >= 1.

    Without ``weights`` the parameters are variables under ``scope`` (created once, reused when built
    again; He-initialised, the noise layer and the fourth level's last layer zero), to train or to fill
    with ``load_denoiser_weights``; ``architecture`` names them (a tag; default ``ARCHITECTURE``).
    With ``weights`` (from ``read_denoiser_weights``) they are graph constants of the weights' architecture.
    """
    from ..models.tf_compat import tf, tf1

    chosen = architecture_of(weights) if weights is not None else ARCHITECTURES[architecture or ARCHITECTURE]
    shapes = chosen.parameter_shapes

    def parameter(name: str) -> "tf.Tensor":
        if weights is not None:
            return tf.constant(weights[name], tf.float32, name=name.replace("/", "_"))
        zero = name.startswith(("noise/", "decoder3/conv2/")) or name.endswith("/bias")
        initializer = tf1.zeros_initializer() if zero else tf1.variance_scaling_initializer(2.0)
        return tf1.get_variable(name, shapes[name], tf.float32, initializer=initializer)

    def conv(inputs: "tf.Tensor", name: str, *, stride: int = 1, relu: bool = True) -> "tf.Tensor":
        outputs = tf.nn.conv2d(inputs, parameter(f"{name}/kernel"), strides=stride, padding="SAME")
        outputs = tf.nn.bias_add(outputs, parameter(f"{name}/bias"))
        return tf.nn.relu(outputs) if relu else outputs

    def upsample_to(inputs: "tf.Tensor", like: "tf.Tensor") -> "tf.Tensor":
        # Odd sizes (299 -> 150 -> 75) do not double back exactly: resize to the skip's size.
        return tf.image.resize(inputs, tf.shape(like)[1:3], method="bilinear")

    with tf1.variable_scope(scope, reuse=tf1.AUTO_REUSE):
        images = pixels / 127.5 - 1.0
        level1 = conv(conv(images, "encoder1/conv1"), "encoder1/conv2")
        level2 = conv(conv(level1, "encoder2/conv1", stride=2), "encoder2/conv2")
        level3 = conv(conv(level2, "encoder3/conv1", stride=2), "encoder3/conv2")
        if chosen.levels == 4:
            # Context from a quarter of the resolution again, added to level 3 (a residual branch).
            level4 = conv(conv(level3, "encoder4/conv1", stride=2), "encoder4/conv2")
            up3 = tf.concat([upsample_to(level4, level3), level3], axis=-1)
            level3 = level3 + conv(conv(up3, "decoder3/conv1"), "decoder3/conv2", relu=False)
        up2 = tf.concat([upsample_to(level3, level2), level2], axis=-1)
        up2 = conv(conv(up2, "decoder2/conv1"), "decoder2/conv2")
        up1 = tf.concat([upsample_to(up2, level1), level1], axis=-1)
        up1 = conv(conv(up1, "decoder1/conv1"), "decoder1/conv2")
        noise = conv(up1, "noise", relu=False)
        return tf.clip_by_value((images - noise + 1.0) * 127.5, 0.0, 255.0)


def denoiser_variables(scope: str = "denoiser") -> dict[str, "tf.Variable"]:
    """The current graph's denoiser variables under ``scope``, keyed by parameter name."""
    from ..models.tf_compat import tf1

    known = {name for architecture in ARCHITECTURES.values() for name in architecture.parameter_shapes}
    prefix = f"{scope}/"
    found = {
        variable.op.name[len(prefix):]: variable
        for variable in tf1.global_variables()
        if variable.op.name.startswith(prefix) and variable.op.name[len(prefix):] in known
    }
    try:
        architecture_of(found)
    except ValueError:
        raise ValueError(f"no denoiser built under scope {scope!r} in this graph") from None
    return found


def save_denoiser_weights(session: "tf.compat.v1.Session", path: Path, scope: str = "denoiser") -> None:
    """Write the denoiser's variables under ``scope`` to ``path`` (``.npz``), atomically."""
    from ..contract.atomic import atomic_write

    values = session.run(denoiser_variables(scope))
    arrays = {name: np.asarray(value, np.float32) for name, value in values.items()}
    arrays[_TAG_KEY] = np.array(architecture_of(values).tag)
    arrays[_VERSION_KEY] = np.array(FORMAT_VERSION)
    with atomic_write(Path(path)) as stream:
        np.savez(stream, **arrays)


def read_denoiser_weights(path: Path) -> dict[str, np.ndarray]:
    """The parameters stored in ``path``, checked against the architecture its tag names.

    Raises ``DenoiserWeightsError`` (one line naming the file) when it is missing, not a complete
    ``.npz``, tagged with an unknown architecture or version, or lacks a parameter of the right shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DenoiserWeightsError(f"{path}: denoiser weights file not found")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a plain .npy array
            raise DenoiserWeightsError(f"{path}: not a denoiser weights file (.npz archive expected)")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DenoiserWeightsError(f"{path}: unreadable denoiser weights (truncated or corrupt: {reason})") from None
    tag = str(arrays.get(_TAG_KEY, "none"))
    if tag not in ARCHITECTURES:
        expected = " or ".join(repr(known) for known in ARCHITECTURES)
        raise DenoiserWeightsError(f"{path}: weights of architecture {tag!r}, expected {expected}")
    version = arrays.get(_VERSION_KEY)
    valid_version = version is not None and version.shape == () and np.issubdtype(version.dtype, np.integer)
    if not valid_version or int(version) != FORMAT_VERSION:
        raise DenoiserWeightsError(f"{path}: weights format version {version}, expected {FORMAT_VERSION}")
    shapes = ARCHITECTURES[tag].parameter_shapes
    for name, shape in shapes.items():
        if name not in arrays:
            raise DenoiserWeightsError(f"{path}: parameter {name} missing")
        if arrays[name].shape != shape or not np.issubdtype(arrays[name].dtype, np.floating):
            raise DenoiserWeightsError(
                f"{path}: parameter {name} is {arrays[name].dtype} {arrays[name].shape}, expected float {shape}"
            )
        if not np.isfinite(arrays[name]).all():
            raise DenoiserWeightsError(f"{path}: parameter {name} holds non-finite values")
    return {name: arrays[name].astype(np.float32) for name in shapes}


def load_denoiser_weights(session: "tf.compat.v1.Session", path: Path, scope: str = "denoiser") -> None:
    """Fill the denoiser's variables under ``scope`` from ``path`` (checked as ``read_denoiser_weights`` does).

    Weights of a smaller architecture whose parameters all exist here (three levels into four) fill
    those; the rest keep their initial values, so the grown denoiser starts as the same function.
    """
    weights = read_denoiser_weights(path)
    variables = denoiser_variables(scope)
    if not architecture_of(weights).grows_into(architecture_of(variables)):
        raise DenoiserWeightsError(
            f"{path}: weights of architecture {architecture_of(weights).tag!r} do not fit "
            f"the denoiser under {scope!r} ({architecture_of(variables).tag!r})"
        )
    for name, value in weights.items():
        variables[name].load(value, session)


class DenoiserTransform:
    """Trained denoisers as a defense transform, their weights baked into the graph: one view per
    weights file (copy-major), so that several denoisers' views are averaged like random ones.

    The files are read and checked on construction, so a bad file fails before any image is read.
    """

    def __init__(self, paths: Path | Sequence[Path], scope: str = "denoiser") -> None:
        self.paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(path) for path in paths]
        if not self.paths:
            raise ValueError("a denoiser transform needs at least one weights file")
        self.scope = scope
        self._weights = [read_denoiser_weights(path) for path in self.paths]

    @property
    def copies(self) -> int:
        return len(self.paths)

    @property
    def name(self) -> str:
        return f"denoiser({','.join(path.name for path in self.paths)})"

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf

        views = [build_denoiser(pixels, f"{self.scope}_{index}", weights=weights)
                 for index, weights in enumerate(self._weights)]
        return tf.concat(views, axis=0)


@dataclass
class DenoiserTraining:
    """The training graph's handles; ``step`` and ``loss`` each run once per call.

    ``clean`` and ``adversarial`` are placeholders ``(B, H, W, 3)`` float32 0..255 of the same images.
    """

    clean: "tf.Tensor"
    adversarial: "tf.Tensor"
    denoised: "tf.Tensor"
    loss_tensor: "tf.Tensor"
    train_op: "tf.Operation"
    initializer: "tf.Operation" = field(repr=False)
    """Initialises the denoiser's and the optimiser's variables only (the classifier's are restored)."""
    state: tuple = field(default=(), repr=False)
    """Every variable training changes (denoiser, Adam's moments and powers, the step): a checkpoint saves these."""
    denoised_logits: "tf.Tensor | None" = field(default=None, repr=False)
    """The classifier's logits on the denoised adversarial images."""

    def step(self, session: "tf.compat.v1.Session", clean: np.ndarray, adversarial: np.ndarray) -> float:
        """One optimiser step; returns the loss before it."""
        loss, _ = session.run([self.loss_tensor, self.train_op], {self.clean: clean, self.adversarial: adversarial})
        return float(loss)

    def loss(self, session: "tf.compat.v1.Session", clean: np.ndarray, adversarial: np.ndarray) -> float:
        """The loss without training."""
        return float(session.run(self.loss_tensor, {self.clean: clean, self.adversarial: adversarial}))


def build_denoiser_training(
    classifier_logits: Callable[["tf.Tensor"], "tf.Tensor"],
    *,
    learning_rate: float = 1e-3,
    scope: str = "denoiser",
    target_logits: bool = False,
    architecture: str | None = None,
) -> DenoiserTraining:
    """The logit-guided training step (LGD, Liao et al. 2018) in the current graph.

    ``classifier_logits(pixels (N, H, W, 3) float32 0..255) -> (N, classes)`` builds the frozen
    classifier(s); it is called once, on the denoised adversarial and clean images together. Only
    the denoiser's variables are trained (Adam); the target logits carry no gradient. With
    ``target_logits`` the ``clean`` placeholder takes the clean images' logits ``(N, classes)``,
    computed once beforehand, which saves a third of each step's work. ``architecture``: the
    denoiser's tag (default ``ARCHITECTURE``).
    """
    from ..models.tf_compat import tf, tf1

    adversarial = tf1.placeholder(tf.float32, [None, None, None, 3], name="adversarial")
    denoised = build_denoiser(adversarial, scope, architecture=architecture)
    if target_logits:
        denoised_logits = classifier_logits(denoised)
        clean = tf1.placeholder(tf.float32, denoised_logits.shape, name="clean_logits")
        clean_logits = clean
    else:
        clean = tf1.placeholder(tf.float32, [None, None, None, 3], name="clean")
        logits = classifier_logits(tf.concat([denoised, clean], axis=0))
        denoised_logits, clean_logits = tf.split(logits, 2, axis=0)
    loss = tf.reduce_mean(tf.abs(denoised_logits - tf.stop_gradient(clean_logits)))
    trained = list(denoiser_variables(scope).values())
    optimizer = tf1.train.AdamOptimizer(learning_rate)
    global_step = tf1.train.get_or_create_global_step()
    train_op = optimizer.minimize(loss, var_list=trained, global_step=global_step)
    state = trained + optimizer.variables() + [global_step]
    initializer = tf1.variables_initializer(state)
    return DenoiserTraining(clean, adversarial, denoised, loss, train_op, initializer, tuple(state), denoised_logits)
