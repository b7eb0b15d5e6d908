"""Defense input transforms, built into the classifier's graph in front of its networks.

Every transform follows the model layer's transform interface: called on pixels
``(B, H, W, 3)`` float32 in 0..255 inside a TF1 graph, it returns ``(C*B, H', W', 3)`` float32 in
0..255 with its C copies stacked copy-major (``tf.concat([copy_1, ..., copy_C], axis=0)``); its
``copies`` attribute is C and its ``name`` a short tag for logs and metadata. The classifier
resizes each copy to each network's input size and averages what the copies say.

Random transforms draw fresh randomness at every ``session.run``; under a graph seed
(``tf1.set_random_seed``), and optionally an op seed (``seed=``), a graph replays the same draws.
JPEG and bit-depth reduction have no useful gradient; with ``straight_through=True`` their backward
pass is the identity (BPDA, Athalye, Carlini & Wagner 2018, arXiv 1802.00420), which an adaptive
evaluation needs and a plain defense does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import tensorflow as tf


@runtime_checkable
class DefenseTransform(Protocol):
    """What the classifier's ``logits_function(transform)`` and ``gradient_function(loss, transform)`` accept."""

    @property
    def copies(self) -> int: ...

    @property
    def name(self) -> str: ...

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        """``(B, H, W, 3)`` float32 0..255 -> ``(copies * B, H', W', 3)`` float32 0..255, copy-major."""
        ...


def _straight_through(forward: Callable[["tf.Tensor"], "tf.Tensor"], pixels: "tf.Tensor") -> "tf.Tensor":
    """``forward(pixels)`` exactly, with the identity as its gradient (BPDA)."""
    from ..models.tf_compat import tf

    @tf.custom_gradient
    def apply(x):
        return forward(x), lambda upstream: upstream

    return apply(pixels)


@dataclass(frozen=True)
class RandomResizePad:
    """Random resizing and padding (Xie, Wang, Zhang, Ren & Yuille 2018, arXiv 1711.01991).

    Each image of each copy is resized (nearest neighbour, as in the authors' code) to a random
    ``r x r`` with ``r`` uniform in ``[min_size, output_size)`` and placed at a random offset on an
    ``output_size x output_size`` canvas of ``pad_value``. The defaults are the paper's 299 -> [299,
    331) -> 331; ``pad_value`` 127.5 is the authors' zero padding in their [-1, 1] image range. Draws
    are per image and per copy; the caller averages the ``copies`` passes.

    Nearest neighbour maps output pixel ``i`` of the resized image to input ``floor(i * H / r)``
    (TF1's ``resize_images`` without aligned corners), written as two gathers, so the gradient
    flows to the pixels that were picked.
    """

    copies: int = 2
    output_size: int = 331
    min_size: int = 299
    pad_value: float = 127.5
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ValueError(f"copies must be at least 1, got {self.copies}")
        if not 1 <= self.min_size < self.output_size:
            raise ValueError(f"need 1 <= min_size < output_size, got {self.min_size} and {self.output_size}")

    @property
    def name(self) -> str:
        return f"resize-pad({self.min_size}-{self.output_size - 1}->{self.output_size},x{self.copies})"

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf, tf1

        with tf1.name_scope("random_resize_pad"):
            batch = tf.shape(pixels)[0]
            height, width = tf.shape(pixels)[1], tf.shape(pixels)[2]
            count = batch * self.copies
            images = tf.tile(pixels, [self.copies, 1, 1, 1])  # copy-major: copy c holds rows c*B..c*B+B-1
            sizes = tf1.random.uniform([count], self.min_size, self.output_size, dtype=tf.int32, seed=self.seed)
            # Offsets uniform in 0..output_size - r, one per axis.
            room = tf.cast(self.output_size - sizes + 1, tf.float32)
            op_seed = None if self.seed is None else self.seed + 1
            fractions = tf1.random.uniform([count, 2], 0.0, 1.0, seed=op_seed)
            offsets = tf.cast(tf.floor(fractions * room[:, None]), tf.int32)
            offsets = tf.minimum(offsets, (self.output_size - sizes)[:, None])  # fractions < 1, but float rounding
            canvas = tf.range(self.output_size)[None, :]

            def source_indices(offset: "tf.Tensor", extent: "tf.Tensor") -> tuple["tf.Tensor", "tf.Tensor"]:
                inside = canvas - offset[:, None]  # (count, output_size), position inside the resized image
                # floor division keeps the mapping exact for the positions that are used (inside >= 0).
                source = tf.clip_by_value(tf.math.floordiv(inside * extent, sizes[:, None]), 0, extent - 1)
                valid = (inside >= 0) & (inside < sizes[:, None])
                return source, valid

            rows, rows_valid = source_indices(offsets[:, 0], height)
            columns, columns_valid = source_indices(offsets[:, 1], width)
            resized = tf.gather(images, rows, axis=1, batch_dims=1)
            resized = tf.gather(resized, columns, axis=2, batch_dims=1)
            mask = rows_valid[:, :, None, None] & columns_valid[:, None, :, None]
            return tf.where(mask, resized, tf.fill(tf.shape(resized), tf.constant(self.pad_value, tf.float32)))


@dataclass(frozen=True)
class GaussianNoise:
    """Additive Gaussian noise of standard deviation ``sigma`` (pixels), clipped to 0..255: ``copies``
    independent draws per image, copy-major. In front of a denoiser trained on eps-sized noise it
    drowns the structure a transfer attack relies on, which the denoiser then removes with the noise
    (randomised smoothing's noise, Cohen, Rosenfeld & Kolter 2019, arXiv 1902.02918, without its certificate).
    """

    sigma: float = 8.0
    copies: int = 2
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ValueError(f"copies must be at least 1, got {self.copies}")
        if not 0 < self.sigma <= 255:
            raise ValueError(f"noise sigma must be in (0, 255], got {self.sigma:g}")

    @property
    def name(self) -> str:
        return f"noise({self.sigma:g},x{self.copies})"

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf, tf1

        with tf1.name_scope("gaussian_noise"):
            images = tf.tile(pixels, [self.copies, 1, 1, 1])
            noise = tf1.random.normal(tf.shape(images), stddev=self.sigma, seed=self.seed)
            return tf.clip_by_value(images + noise, 0.0, 255.0)


@dataclass(frozen=True)
class JpegCompression:
    """JPEG re-encoding at ``quality`` (1..100), image by image inside the graph.

    Pixels are rounded to uint8, encoded with 4:2:0 chroma subsampling (PIL's and libjpeg's default)
    and decoded with the accurate integer DCT. Deterministic: one copy.
    """

    quality: int = 75
    straight_through: bool = False
    copies: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.quality}")

    @property
    def name(self) -> str:
        return f"jpeg({self.quality}{',st' if self.straight_through else ''})"

    def _forward(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf

        def reencode(image: "tf.Tensor") -> "tf.Tensor":
            encoded = tf.io.encode_jpeg(image, quality=self.quality, chroma_downsampling=True)
            return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")

        as_uint8 = tf.cast(tf.round(tf.clip_by_value(pixels, 0.0, 255.0)), tf.uint8)
        decoded = tf.map_fn(reencode, as_uint8, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        return tf.ensure_shape(tf.cast(decoded, tf.float32), pixels.shape)

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf1

        with tf1.name_scope("jpeg"):
            if self.straight_through:
                return _straight_through(self._forward, pixels)
            return self._forward(pixels)


@dataclass(frozen=True)
class BitDepthReduction:
    """Bit-depth reduction to ``bits`` per channel (feature squeezing: Xu, Evans & Qi 2018, arXiv 1704.01155).

    In [0, 1] units the squeezed value is ``round(x * (2**bits - 1)) / (2**bits - 1)``; in pixels,
    ``round(p * levels / 255) * 255 / levels`` with ``levels = 2**bits - 1``, computed as those two
    float32 multiplications (round half to even, as numpy). Deterministic: one copy.
    """

    bits: int = 5
    straight_through: bool = False
    copies: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    @property
    def name(self) -> str:
        return f"bits({self.bits}{',st' if self.straight_through else ''})"

    def _forward(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf

        to_levels = tf.constant(self.levels / 255.0, tf.float32)
        to_pixels = tf.constant(255.0 / self.levels, tf.float32)
        return tf.round(tf.clip_by_value(pixels, 0.0, 255.0) * to_levels) * to_pixels

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf1

        with tf1.name_scope("bit_depth"):
            if self.straight_through:
                return _straight_through(self._forward, pixels)
            return self._forward(pixels)


@dataclass(frozen=True)
class MedianSmoothing:
    """``size x size`` median filter per channel (``size`` odd), as in feature squeezing (Xu et al. 2018).

    Edges are mirrored including the edge pixel (``d c b a | a b c d``): scipy.ndimage's
    ``mode='reflect'``, TF's ``SYMMETRIC`` padding. The median is the middle of a top-k, whose
    gradient goes to the pixel that was the median. Deterministic: one copy.
    """

    size: int = 3
    copies: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        if self.size < 1 or self.size % 2 == 0:
            raise ValueError(f"median size must be odd and positive, got {self.size}")

    @property
    def name(self) -> str:
        return f"median({self.size})"

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf, tf1

        with tf1.name_scope("median"):
            half = self.size // 2
            padded = tf.pad(pixels, [[0, 0], [half, half], [half, half], [0, 0]], mode="SYMMETRIC")
            height, width = tf.shape(pixels)[1], tf.shape(pixels)[2]
            window = [
                padded[:, dy : dy + height, dx : dx + width, :] for dy in range(self.size) for dx in range(self.size)
            ]
            stacked = tf.stack(window, axis=-1)  # (B, H, W, 3, size*size)
            largest = tf.math.top_k(stacked, k=(self.size * self.size) // 2 + 1, sorted=True).values
            return tf.ensure_shape(largest[..., -1], pixels.shape)


@dataclass(frozen=True)
class TotalVariationSmoothing:
    """Total-variation denoising by Chambolle's projection algorithm (Chambolle 2004, JMIV 20:89-97),
    per channel, as ``skimage.restoration.denoise_tv_chambolle`` computes it.

    Works in [0, 1] units, so ``weight`` means what skimage's does on float images (larger: smoother).
    ``iterations`` dual steps run without early stopping; skimage's ``max_num_iter = iterations + 1``
    with ``eps=0`` gives the same image (its last step updates the dual variable after the image is
    taken). TV smoothing as a defense: Guo, Rana, Cisse & van der Maaten 2018, arXiv 1711.00117.
    Differentiable (the unrolled iterations); deterministic: one copy.
    """

    weight: float = 0.05
    iterations: int = 30
    copies: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        if self.weight <= 0 or self.iterations < 0:
            raise ValueError(f"need weight > 0 and iterations >= 0, got {self.weight} and {self.iterations}")

    @property
    def name(self) -> str:
        return f"tv({self.weight:g},{self.iterations})"

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf, tf1

        def forward_differences(image: "tf.Tensor") -> tuple["tf.Tensor", "tf.Tensor"]:
            # The last row (column) has no forward neighbour: its difference is 0.
            down = tf.concat([image[:, 1:] - image[:, :-1], tf.zeros_like(image[:, :1])], axis=1)
            right = tf.concat([image[:, :, 1:] - image[:, :, :-1], tf.zeros_like(image[:, :, :1])], axis=2)
            return down, right

        def negative_divergence(down: "tf.Tensor", right: "tf.Tensor") -> "tf.Tensor":
            shifted_down = tf.concat([tf.zeros_like(down[:, :1]), down[:, :-1]], axis=1)
            shifted_right = tf.concat([tf.zeros_like(right[:, :, :1]), right[:, :, :-1]], axis=2)
            return shifted_down + shifted_right - down - right

        with tf1.name_scope("total_variation"):
            image = pixels / 255.0
            dual_down = tf.zeros_like(image)
            dual_right = tf.zeros_like(image)
            step = 0.25  # 1 / (2 * spatial dimensions)
            for _ in range(self.iterations):
                estimate = image + negative_divergence(dual_down, dual_right)
                grad_down, grad_right = forward_differences(estimate)
                # The tiny term keeps the backward pass finite where the image is flat (sqrt'(0) = inf).
                magnitude = tf.sqrt(grad_down**2 + grad_right**2 + 1e-12)
                scale = 1.0 + (step / self.weight) * magnitude
                dual_down = (dual_down - step * grad_down) / scale
                dual_right = (dual_right - step * grad_right) / scale
            denoised = image + negative_divergence(dual_down, dual_right)
            return tf.clip_by_value(denoised * 255.0, 0.0, 255.0)


@dataclass(frozen=True)
class HorizontalFlip:
    """Mirror left-right; with ``with_original`` (default) two copies: the image, then its mirror."""

    with_original: bool = True

    @property
    def copies(self) -> int:
        return 2 if self.with_original else 1

    @property
    def name(self) -> str:
        return "flip(+original)" if self.with_original else "flip"

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf

        mirrored = tf.reverse(pixels, axis=[2])
        return tf.concat([pixels, mirrored], axis=0) if self.with_original else mirrored


@dataclass(frozen=True)
class CornerCrops:
    """The image and its four corner crops of ``fraction`` of each side, each resized back to the
    image's size (bilinear, corners aligned: TF's ``crop_and_resize``): five views, deterministic.

    After a denoiser, the views shift and rescale what is left of a transfer attack's perturbation
    against the pixel grid it was crafted on (the attack-side idea of SI and DI, turned round).
    """

    fraction: float = 0.95
    copies: int = field(default=5, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"crop fraction must be in (0, 1], got {self.fraction:g}")

    @property
    def name(self) -> str:
        return f"crops({self.fraction:g},x5)"

    def boxes(self) -> list[list[float]]:
        """The five boxes ``[top, left, bottom, right]`` as fractions: whole, top-left, top-right, bottom-left, bottom-right."""
        f = self.fraction
        return [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, f, f], [0.0, 1 - f, f, 1.0], [1 - f, 0.0, 1.0, f], [1 - f, 1 - f, 1.0, 1.0]]

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf, tf1

        with tf1.name_scope("corner_crops"):
            batch = tf.shape(pixels)[0]
            size = tf.shape(pixels)[1:3]
            views = [
                tf.image.crop_and_resize(pixels, tf.tile(tf.constant([box], tf.float32), [batch, 1]), tf.range(batch), size)
                for box in self.boxes()
            ]
            return tf.concat(views, axis=0)


@dataclass(frozen=True)
class WithOriginal:
    """``inner``'s copies, then the input itself as one more copy (copy-major, the original last).

    Lets one graph run see a defense's views and the undefended image together, for a defense that
    weighs the one against the other (the ``versus-plain`` recipe step). Where ``inner`` changes the
    size (resize-pad's larger canvas), the original is resized to it (bilinear; the identity otherwise).
    """

    inner: DefenseTransform

    @property
    def copies(self) -> int:
        return int(self.inner.copies) + 1

    @property
    def name(self) -> str:
        return f"{self.inner.name}+original"

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        from ..models.tf_compat import tf

        views = self.inner(pixels)
        return tf.concat([views, tf.image.resize(pixels, tf.shape(views)[1:3])], axis=0)


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order; copies multiply (``C = C_1 * ... * C_n``).

    Each transform runs on the whole copy-major output of the one before, so the result stays
    copy-major: the copy of row ``r`` is ``r // B``. An empty chain is the identity.
    """

    transforms: tuple[DefenseTransform, ...] = ()

    def __init__(self, transforms: Sequence[DefenseTransform] = ()) -> None:
        object.__setattr__(self, "transforms", tuple(transforms))

    @property
    def copies(self) -> int:
        return math.prod(transform.copies for transform in self.transforms)

    @property
    def name(self) -> str:
        return "+".join(transform.name for transform in self.transforms) or "identity"

    def __call__(self, pixels: "tf.Tensor") -> "tf.Tensor":
        for transform in self.transforms:
            pixels = transform(pixels)
        return pixels
