"""Input transforms of transfer attacks, as TensorFlow (graph-mode) functions the classifier compiles.

A transform maps pixels ``(B, H, W, 3)`` float32 0..255 to ``copies`` transformed copies stacked
copy-major, ``(copies * B, H, W, 3)`` (``tf.concat([copy_1, ..., copy_C], axis=0)``); the classifier
resizes each copy to each network's input size, tiles labels and weights ``copies`` times and sums
the loss over all of them, so one gradient averages over the copies (up to a constant factor, which
the loop's L1 normalisation removes). Every transform has ``copies``, ``name`` and ``__call__``;
those with random parameters also have ``apply(pixels, ...)`` taking the parameters explicitly,
which ``__call__`` draws with TensorFlow's random ops (seeded by the graph's seed), so tests and
callers can fix them.

The methods (defaults are each paper's settings):
- ``InputDiversity`` (DI): Xie et al. 2019, arXiv 1803.06978.
- ``ScaleInvariance`` (SI): Lin et al. 2020, arXiv 1908.06281.
- ``Admix``: Wang, He, Lin, Hopcroft & Hopcroft 2021, arXiv 2102.00436.
- ``BlockShuffleRotation`` (BSR): Wang, Zhang, Wang & Hopcroft 2024, arXiv 2308.10299.
- ``StructureInvariance`` (SIA): Wang, Zhang, Hopcroft & He 2023, arXiv 2309.14700.
- ``compose``: several transforms in a row, each later one applied to every copy of the former.

TensorFlow is imported lazily (through ``nips_adv.models.tf_compat``), so importing this module is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_DIVERSITY_SCALE = 330 / 299
"""DI pads to this multiple of the input side (Xie et al.: 299 -> 330)."""
PIXEL_CENTER = 127.5
"""Where 0 falls in the networks' [-1, 1] input range: the papers scale and mix in that range."""


def _tf() -> Any:
    from ..models.tf_compat import tf

    return tf


class Transform(Protocol):
    """What the classifier compiles: ``(B, H, W, 3)`` float32 0..255 -> ``(copies * B, H', W', 3)``, copy-major."""

    copies: int
    name: str

    def __call__(self, pixels: Any) -> Any: ...


@dataclass(frozen=True)
class Identity:
    """The image itself, one copy: plain (MI-/I-)FGSM."""

    name: str = "identity"

    @property
    def copies(self) -> int:
        return 1

    def __call__(self, pixels: Any) -> Any:
        return pixels


@dataclass(frozen=True)
class InputDiversity:
    """DI (Xie et al. 2019, "Improving Transferability of Adversarial Examples with Input Diversity",
    arXiv 1803.06978): with ``probability`` (paper: 0.5), resize the image by nearest neighbour to a
    random side in [H, H * ``scale``) (paper: 299 -> [299, 330)), pad it with zeros at a random offset
    to H * ``scale``, and resize it back to H x W (bilinear) so every network keeps its input shape.
    One draw per call, shared by the batch, as in the paper's code. One copy.
    """

    probability: float = 0.5
    scale: float = DEFAULT_DIVERSITY_SCALE
    name: str = "di"

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"DI probability must be in [0, 1], got {self.probability}")
        if self.scale < 1.0:
            raise ValueError(f"DI scale must be at least 1, got {self.scale}")

    @property
    def copies(self) -> int:
        return 1

    def padded_shape(self, pixels: Any) -> tuple[Any, Any]:
        """``round(H * scale), round(W * scale)`` as int32 scalars."""
        tf = _tf()
        shape = tf.shape(pixels)
        padded = tf.cast(tf.round(tf.cast(shape[1:3], tf.float32) * self.scale), tf.int32)
        return padded[0], padded[1]

    def __call__(self, pixels: Any) -> Any:
        tf = _tf()
        shape = tf.shape(pixels)
        padded_height, padded_width = self.padded_shape(pixels)
        room = tf.minimum(padded_height - shape[1], padded_width - shape[2])

        def diversify():
            grow = tf.random.uniform([], 0, tf.maximum(room, 1), dtype=tf.int32)
            top = tf.random.uniform([], 0, padded_height - shape[1] - grow + 1, dtype=tf.int32)
            left = tf.random.uniform([], 0, padded_width - shape[2] - grow + 1, dtype=tf.int32)
            return self.apply(pixels, grow=grow, top=top, left=left)

        diverse = tf.cond(tf.random.uniform([]) < self.probability, diversify, lambda: pixels)
        diverse.set_shape(pixels.shape)
        return diverse

    def apply(self, pixels: Any, *, grow: Any, top: Any, left: Any) -> Any:
        """The DI image for given draws: resized to ``(H + grow, W + grow)``, placed ``top``/``left``
        pixels from the corner of the zero ``padded_shape`` canvas, resized back to ``(H, W)``."""
        tf = _tf()
        shape = tf.shape(pixels)
        padded_height, padded_width = self.padded_shape(pixels)
        rescaled = tf.image.resize(pixels, tf.stack([shape[1] + grow, shape[2] + grow]), method="nearest")
        bottom = padded_height - shape[1] - grow - top
        right = padded_width - shape[2] - grow - left
        padded = tf.pad(rescaled, [[0, 0], [top, bottom], [left, right], [0, 0]])
        return tf.image.resize(padded, shape[1:3], method="bilinear")


@dataclass(frozen=True)
class ScaleInvariance:
    """SI (Lin et al. 2020, "Nesterov Accelerated Gradient and Scale Invariance for Adversarial
    Attacks", arXiv 1908.06281): ``scales`` copies S_i(x) = x / 2^i, i = 0..m-1 (paper: m = 5).

    The paper divides the network's input, which lies in [-1, 1], so the copies fade toward grey;
    in pixels that is ``center + (x - center) / 2^i`` with ``center`` = 127.5 (set 0 for x / 2^i
    in pixel units, fading toward black). No randomness.
    """

    scales: int = 5
    center: float = PIXEL_CENTER
    name: str = "si"

    def __post_init__(self) -> None:
        if self.scales < 1:
            raise ValueError(f"SI needs at least 1 scale, got {self.scales}")

    @property
    def copies(self) -> int:
        return self.scales

    def __call__(self, pixels: Any) -> Any:
        return _tf().concat(_scale_copies(pixels, self.scales, self.center), axis=0)


def _scale_copies(pixels: Any, scales: int, center: float) -> list[Any]:
    return [center + (pixels - center) * (0.5**i) for i in range(scales)]


@dataclass(frozen=True)
class Admix:
    """Admix (Wang et al. 2021, "Admix: Enhancing the Transferability of Adversarial Attacks",
    arXiv 2102.00436): for each of ``mixes`` partner images x' (paper: m2 = 3) taken from other
    images of the batch, the SI copies of x + ``strength`` * x' (paper: eta = 0.2, m1 = 5 scales),
    ``scales * mixes`` copies, copy index ``mix * scales + scale``.

    As with SI the paper works in [-1, 1]: in pixels the mix is ``x + strength * (x' - center)``
    and the scales fade toward ``center``. The mixed images leave 0..255 slightly, unclipped as in
    the paper. The partner is a constant (``stop_gradient``): the paper's gradient is w.r.t. x only.
    Partners are ``(b + r) mod B`` with r uniform in 1..B-1 per image and mix (another image of the
    batch, never itself when B > 1; with B = 1 the image is its own partner).
    """

    scales: int = 5
    mixes: int = 3
    strength: float = 0.2
    center: float = PIXEL_CENTER
    name: str = "admix"

    def __post_init__(self) -> None:
        if self.scales < 1 or self.mixes < 1:
            raise ValueError(f"Admix needs at least 1 scale and 1 mix, got {self.scales} and {self.mixes}")

    @property
    def copies(self) -> int:
        return self.scales * self.mixes

    def __call__(self, pixels: Any) -> Any:
        tf = _tf()
        batch = tf.shape(pixels)[0]
        offsets = 1 + tf.random.uniform([self.mixes, batch], 0, tf.maximum(batch - 1, 1), dtype=tf.int32)
        partners = tf.math.floormod(tf.range(batch)[None, :] + offsets, batch)
        return self.apply(pixels, partners)

    def apply(self, pixels: Any, partners: Any) -> Any:
        """The copies for given ``partners``: ``(mixes, B)`` int32 batch indices of each image's x'."""
        tf = _tf()
        others = tf.stop_gradient(pixels)
        copies = []
        for mix in range(self.mixes):
            mixed = pixels + self.strength * (tf.gather(others, partners[mix]) - self.center)
            copies.extend(_scale_copies(mixed, self.scales, self.center))
        return tf.concat(copies, axis=0)


@dataclass(frozen=True)
class BlockShuffleRotation:
    """BSR (Wang, Zhang, Wang & Hopcroft 2024, "Boosting Adversarial Transferability by Block
    Shuffle and Rotation", arXiv 2308.10299): split the image into ``blocks`` x ``blocks`` blocks
    (paper: n = 2), shuffle them, rotate each block about its centre by an angle uniform in
    +-``max_angle`` degrees (paper: tau = 24; bilinear, zero outside the block), ``copies`` copies
    (paper: N = 20).

    The grid splits each side as evenly as it can (149 + 150 for 299), so blocks may differ by a
    pixel; they are shuffled as the authors' code does, in two levels: the rows of blocks are
    permuted, then the blocks inside each row. Draws are per copy, shared by the batch (as in
    the authors' code). All copies come from one gather of 4 bilinear taps, so the graph does not
    grow with the number of copies.
    """

    blocks: int = 2
    max_angle: float = 24.0
    copies: int = 20
    name: str = "bsr"

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.copies < 1:
            raise ValueError(f"BSR needs at least 1 block and 1 copy, got {self.blocks} and {self.copies}")
        if self.max_angle < 0:
            raise ValueError(f"BSR max angle must be non-negative, got {self.max_angle}")

    def __call__(self, pixels: Any) -> Any:
        tf = _tf()
        n = self.blocks
        row_orders = tf.argsort(tf.random.uniform([self.copies, n]), axis=-1)
        column_orders = tf.argsort(tf.random.uniform([self.copies, n, n]), axis=-1)
        angles = tf.random.uniform([self.copies, n, n], -self.max_angle, self.max_angle)
        return self.apply(pixels, row_orders, column_orders, angles)

    def apply(self, pixels: Any, row_orders: Any, column_orders: Any, angles: Any) -> Any:
        """The copies for given draws: ``row_orders`` ``(copies, n)`` and ``column_orders``
        ``(copies, n, n)`` int32 permutations (output row of blocks k shows input row of blocks
        ``row_orders[c, k]``, whose block ``column_orders[c, k, j]`` lands at column j), ``angles``
        ``(copies, n, n)`` float32 degrees, one per output block (positive: counter-clockwise)."""
        tf = _tf()
        shape = tf.shape(pixels)
        height, width = shape[1], shape[2]
        row_orders = tf.cast(row_orders, tf.int32)
        column_orders = tf.cast(column_orders, tf.int32)
        row_sizes, column_sizes = _even_sizes(height, self.blocks), _even_sizes(width, self.blocks)
        # Rows: output row y lies in output row-block k, showing input row-block row_orders[c, k].
        out_row, row_source, row_block, row_origin = _block_layout(row_sizes, row_orders, height)  # (C, H)
        # Columns: per output row-block k its own order, (C, n, W); then picked per output row.
        out_column, column_source, column_block, column_origin = _block_layout(column_sizes, column_orders, width)
        def pick(per_strip):
            return tf.gather(per_strip, row_block, axis=1, batch_dims=1)  # (C, n, W) -> (C, H, W)
        local_x, block_width, origin_x = pick(out_column), pick(column_source), pick(column_origin)
        block_column = pick(column_block)
        local_y, block_height, origin_y = (tf.broadcast_to(t[:, :, None], tf.shape(local_x)) for t in (out_row, row_source, row_origin))
        row_index = tf.broadcast_to(row_block[:, :, None], tf.shape(local_x))
        angle = tf.gather_nd(tf.cast(angles, tf.float32), tf.stack([row_index, block_column], axis=-1), batch_dims=1)
        angle = angle * (math.pi / 180.0)
        # Inverse rotation about the block's centre: where in the source block each output pixel samples.
        centre_y = (tf.cast(block_height, tf.float32) - 1.0) / 2.0
        centre_x = (tf.cast(block_width, tf.float32) - 1.0) / 2.0
        dy, dx = tf.cast(local_y, tf.float32) - centre_y, tf.cast(local_x, tf.float32) - centre_x
        cos, sin = tf.cos(angle), tf.sin(angle)
        source_x = centre_x + cos * dx - sin * dy
        source_y = centre_y + sin * dx + cos * dy
        return _bilinear_gather(pixels, source_y, source_x, block_height, block_width, origin_y, origin_x)


def _even_sizes(length: Any, parts: int) -> Any:
    """``parts`` int32 sizes adding up to ``length``, as even as possible (the larger ones last)."""
    tf = _tf()
    bounds = (tf.range(parts + 1) * length) // parts
    return bounds[1:] - bounds[:-1]


def _block_layout(sizes: Any, orders: Any, length: Any) -> tuple[Any, Any, Any, Any]:
    """For an axis of ``length`` cut into blocks of ``sizes`` (n,) and laid out in ``orders``
    (..., n): per output position (..., length) its offset inside its block, the block's size,
    which output block it is in, and where that block starts in the input."""
    tf = _tf()
    source_sizes = tf.gather(sizes, orders)  # (..., n) sizes in output order
    source_starts = tf.gather(tf.cumsum(sizes, exclusive=True), orders)
    output_starts = tf.cumsum(source_sizes, axis=-1, exclusive=True)
    position = tf.range(length)
    # Block index of each position: how many blocks start at or before it, less one.
    block = tf.reduce_sum(tf.cast(output_starts[..., None, :] <= position[:, None], tf.int32), axis=-1) - 1
    batch_dims = len(orders.shape) - 1
    offset = position - tf.gather(output_starts, block, axis=-1, batch_dims=batch_dims)
    size = tf.gather(source_sizes, block, axis=-1, batch_dims=batch_dims)
    origin = tf.gather(source_starts, block, axis=-1, batch_dims=batch_dims)
    return offset, size, block, origin


def _bilinear_gather(pixels: Any, source_y: Any, source_x: Any, height: Any, width: Any, origin_y: Any, origin_x: Any) -> Any:
    """Copies ``(C * B, H, W, 3)``: copy c's pixel (y, x) sampled bilinearly at ``(source_y, source_x)``
    (C, H, W) inside the block of ``height`` x ``width`` starting at ``(origin_y, origin_x)``; taps
    outside the block count as 0."""
    tf = _tf()
    shape = tf.shape(pixels)
    flat = tf.reshape(tf.transpose(pixels, [1, 2, 0, 3]), tf.stack([-1, shape[0], 3]))  # (H*W, B, 3)
    top, left = tf.floor(source_y), tf.floor(source_x)
    weight_y, weight_x = source_y - top, source_x - left
    top, left = tf.cast(top, tf.int32), tf.cast(left, tf.int32)
    result = 0.0
    for step_y, tap_y in ((0, 1.0 - weight_y), (1, weight_y)):
        for step_x, tap_x in ((0, 1.0 - weight_x), (1, weight_x)):
            y, x = top + step_y, left + step_x
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            index = (origin_y + tf.clip_by_value(y, 0, height - 1)) * shape[2] + origin_x + tf.clip_by_value(x, 0, width - 1)
            weight = tf.where(inside, tap_y * tap_x, 0.0)
            result += weight[..., None, None] * tf.gather(flat, index)  # (C, H, W, B, 3)
    copies = tf.transpose(result, [0, 3, 1, 2, 4])
    return tf.reshape(copies, tf.stack([-1, shape[1], shape[2], 3]))


SIA_OPERATIONS = (
    "vertical_shift",
    "horizontal_shift",
    "vertical_flip",
    "horizontal_flip",
    "rotate_180",
    "scale",
    "noise",
    "resize",
    "dct",
    "dropout",
)
"""The per-block transforms of SIA, all ten of the paper's table."""

# Each operation is L_rows @ block @ L_columns^T, then a factor, a dropout mask, noise and a clip; the
# matrices by kind: 0 identity, 1 reversal, 2 down-up resize, 3 DCT low-pass, 4 cyclic shift (per copy).
_ROW_KIND = {"vertical_shift": 4, "vertical_flip": 1, "rotate_180": 1, "resize": 2, "dct": 3}
_COLUMN_KIND = {"horizontal_shift": 4, "horizontal_flip": 1, "rotate_180": 1, "resize": 2, "dct": 3}


@dataclass(frozen=True)
class StructureInvariance:
    """SIA (Wang, Zhang, Hopcroft & He 2023, "Structure Invariant Transformation for better
    Adversarial Transferability", arXiv 2309.14700): cut the image at random points into
    ``blocks`` x ``blocks`` blocks (paper: s = 3) and give each block its own transform drawn
    uniformly from ``operations``, ``copies`` copies (paper: N = 20). All ten of the paper's
    operations, with its settings (pixel units; the paper's images are 0..1):

    - vertical / horizontal shift: cyclic roll of the block by a uniform 0..side-1 pixels;
    - vertical / horizontal flip, rotation by 180 degrees;
    - scale: pixel values times a factor uniform in [0, 1);
    - noise: uniform in +-``noise`` (16/255 of the range), clipped to 0..255;
    - resize: bilinear down to ``floor(resize_ratio * side) + 1`` (0.8) and back up;
    - dct: 2-D orthonormal DCT-II, the highest ``floor(dct_drop * side)`` (0.4) frequencies of each
      axis zeroed, inverse DCT;
    - dropout: each pixel (all channels) zeroed with probability ``dropout`` (0.1), not rescaled.

    Operations are drawn per copy and block, shared by the batch, as in the authors' code. The cut
    points are drawn once per call and shared by its copies (the authors draw them per copy): that
    lets one einsum per block serve every copy, so the graph does not grow with the copies.
    """

    blocks: int = 3
    copies: int = 20
    operations: tuple[str, ...] = SIA_OPERATIONS
    noise: float = 16.0
    resize_ratio: float = 0.8
    dct_drop: float = 0.4
    dropout: float = 0.1
    name: str = "sia"

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.copies < 1:
            raise ValueError(f"SIA needs at least 1 block and 1 copy, got {self.blocks} and {self.copies}")
        unknown = [operation for operation in self.operations if operation not in SIA_OPERATIONS]
        if unknown or not self.operations:
            raise ValueError(f"SIA operations must be a non-empty subset of {', '.join(SIA_OPERATIONS)}, got {self.operations}")

    def __call__(self, pixels: Any) -> Any:
        tf = _tf()
        shape = tf.shape(pixels)
        row_sizes = _random_sizes(shape[1], self.blocks)
        column_sizes = _random_sizes(shape[2], self.blocks)
        choices = tf.random.uniform([self.copies, self.blocks, self.blocks], 0, len(self.operations), dtype=tf.int32)
        return self.apply(pixels, row_sizes, column_sizes, choices)

    def apply(self, pixels: Any, row_sizes: Any, column_sizes: Any, choices: Any) -> Any:
        """The copies for given cuts and operations: ``row_sizes`` and ``column_sizes`` ``(blocks,)``
        int32 adding up to H and W, ``choices`` ``(copies, blocks, blocks)`` int32 indices into
        ``operations``. The random parameters of shift, scale, noise and dropout are drawn here."""
        tf = _tf()
        shape = tf.shape(pixels)
        choices = tf.cast(choices, tf.int32)
        strips = tf.split(pixels, row_sizes, axis=1, num=self.blocks)
        rows = []
        for i, strip in enumerate(strips):
            blocks = tf.split(strip, column_sizes, axis=2, num=self.blocks)
            rows.append(tf.concat([self._block(block, choices[:, i, j]) for j, block in enumerate(blocks)], axis=3))
        copies = tf.concat(rows, axis=2)  # (C, B, H, W, 3)
        return tf.reshape(copies, tf.stack([-1, shape[1], shape[2], 3]))

    def _block(self, block: Any, choice: Any) -> Any:
        """``block`` ``(B, h, w, 3)`` under each copy's operation ``operations[choice[c]]``: ``(C, B, h, w, 3)``."""
        tf = _tf()
        shape = tf.shape(block)
        copies = tf.shape(choice)[0]

        def table(values: list[float]) -> Any:
            return tf.gather(tf.constant(values, tf.float32), choice)  # (C,)

        row_matrix = self._matrices(shape[1], [_ROW_KIND.get(op, 0) for op in self.operations], choice)
        column_matrix = self._matrices(shape[2], [_COLUMN_KIND.get(op, 0) for op in self.operations], choice)
        transformed = tf.einsum("chk,bkwd,cvw->cbhvd", row_matrix, block, column_matrix)
        is_scale, is_noise, is_dropout = (table([float(op == name) for op in self.operations]) for name in ("scale", "noise", "dropout"))
        factor = 1.0 + is_scale * (tf.random.uniform([copies]) - 1.0)
        copy_shape = tf.concat([[copies], shape], axis=0)
        dropped = tf.cast(tf.random.uniform(tf.concat([copy_shape[:4], [1]], axis=0)) < self.dropout, tf.float32)
        keep = 1.0 - is_dropout[:, None, None, None, None] * dropped
        noise = is_noise[:, None, None, None, None] * tf.random.uniform(copy_shape, -self.noise, self.noise)
        transformed = transformed * factor[:, None, None, None, None] * keep + noise
        # Noise is clipped to the pixel range, as in the authors' code; the others keep it but for DCT's ringing.
        noisy = is_noise[:, None, None, None, None]
        return noisy * tf.clip_by_value(transformed, 0.0, 255.0) + (1.0 - noisy) * transformed

    def _matrices(self, side: Any, kinds: list[int], choice: Any) -> Any:
        """``(C, side, side)``: per copy the matrix of its operation's kind (see _ROW_KIND)."""
        tf = _tf()
        identity = tf.eye(side)
        smaller = tf.cast(tf.floor(tf.cast(side, tf.float32) * self.resize_ratio), tf.int32) + 1
        fixed = tf.stack([identity, tf.reverse(identity, axis=[0]), resize_matrix(side, smaller), dct_low_pass_matrix(side, self.dct_drop)])
        kind = tf.gather(tf.constant(kinds, tf.int32), choice)  # (C,)
        chosen = tf.einsum("ck,kij->cij", tf.one_hot(kind, 4), fixed)
        # A cyclic shift by a per-copy random amount: row r takes row (r - shift) mod side.
        shift = tf.random.uniform(tf.shape(choice), 0, side, dtype=tf.int32)
        rolled = tf.one_hot(tf.math.floormod(tf.range(side)[None, :] - shift[:, None], side), side)
        is_shift = tf.cast(tf.equal(kind, 4), tf.float32)[:, None, None]
        return chosen + is_shift * rolled


def _random_sizes(length: Any, parts: int) -> Any:
    """``parts`` positive int32 sizes adding up to ``length`` (>= parts), cut at distinct random points."""
    tf = _tf()
    cuts = tf.sort(tf.random.shuffle(tf.range(1, length))[: parts - 1])
    bounds = tf.concat([[0], cuts, [length]], axis=0)
    return bounds[1:] - bounds[:-1]


def resize_matrix(side: Any, smaller: Any) -> Any:
    """``(side, side)`` matrix M with ``M @ v`` = v resized (bilinear, half-pixel) to ``smaller`` and back."""
    tf = _tf()
    identity = tf.eye(side)[None, :, :, None]
    down = tf.image.resize(identity, tf.stack([smaller, side]), method="bilinear")
    return tf.image.resize(down, tf.stack([side, side]), method="bilinear")[0, :, :, 0]


def dct_matrix(side: Any) -> Any:
    """``(side, side)`` orthonormal DCT-II matrix: row k holds the k-th cosine."""
    tf = _tf()
    n = tf.cast(side, tf.float32)
    frequency = tf.cast(tf.range(side), tf.float32)[:, None]
    position = tf.cast(tf.range(side), tf.float32)[None, :]
    cosines = tf.cos(math.pi * (2.0 * position + 1.0) * frequency / (2.0 * n))
    scale = tf.where(tf.equal(frequency, 0.0), tf.sqrt(1.0 / n), tf.sqrt(2.0 / n))
    return scale * cosines


def dct_low_pass_matrix(side: Any, drop: float) -> Any:
    """``(side, side)`` projection that zeroes the top ``floor(drop * side)`` DCT frequencies."""
    tf = _tf()
    basis = dct_matrix(side)
    kept = side - tf.cast(tf.floor(tf.cast(side, tf.float32) * drop), tf.int32)
    mask = tf.cast(tf.range(side) < kept, tf.float32)
    return tf.linalg.matmul(basis, mask[:, None] * basis, transpose_a=True)


@dataclass(frozen=True)
class Composed:
    """``transforms`` in a row: each applied to every copy of the one before, with its own draws
    (e.g. SI then DI: each of the 5 scales gets its own DI draw, as in SI-NI-DIM's code).
    Copies multiply; copy index ``first_copy * later_copies + later_copy``."""

    transforms: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def copies(self) -> int:
        return math.prod(transform.copies for transform in self.transforms)

    @property
    def name(self) -> str:
        return "+".join(transform.name for transform in self.transforms)

    def __call__(self, pixels: Any) -> Any:
        tf = _tf()
        copies = 1
        for transform in self.transforms:
            if copies == 1:
                pixels = transform(pixels)
            else:
                pixels = tf.concat([transform(part) for part in tf.split(pixels, copies, axis=0)], axis=0)
            copies *= transform.copies
        return pixels


def compose(*transforms: Any) -> Any:
    """``transforms`` applied left to right (``compose(ScaleInvariance(), InputDiversity())`` is DI on
    each SI copy); one transform is returned as it is, none gives ``Identity()``."""
    if not transforms:
        return Identity()
    if len(transforms) == 1:
        return transforms[0]
    return Composed(tuple(transforms))


@dataclass(frozen=True)
class CopyTransform:
    """One entry of the copy-transform registry: everything the loop, the plan, the CLI and the docs need."""

    name: str
    kind: Callable[..., Any]
    """The transform class; ``copies_field`` is its constructor's argument for the number of copies."""
    copies_field: str
    copies_are: str
    """What one "copy" is for this transform, in the CLI's and the docs' words."""
    plan_copies: int
    """The most copies per step the default plan buys (more were not worth their gradients)."""
    paper: str

    def make(self, copies: int | None = None) -> Any:
        """The transform with its paper's settings, and ``copies`` copies when given."""
        return self.kind() if copies is None else self.kind(**{self.copies_field: copies})


COPY_TRANSFORMS: dict[str, CopyTransform] = {
    entry.name: entry
    for entry in (
        CopyTransform("si", ScaleInvariance, "scales", "scales x / 2^i", 5, "Lin et al. 2020, arXiv 1908.06281"),
        CopyTransform("admix", Admix, "mixes", "mixes with other images (5 scales each)", 4, "Wang et al. 2021, arXiv 2102.00436"),
        CopyTransform("bsr", BlockShuffleRotation, "copies", "block-shuffled and rotated copies", 20, "Wang et al. 2024, arXiv 2308.10299"),
        CopyTransform("sia", StructureInvariance, "copies", "block-transformed copies", 20, "Wang et al. 2023, arXiv 2309.14700"),
    )
}
"""The transforms that make several copies of each image per step: one entry each. A new one is a class
above and an entry here; ``SignGradientConfig.copy_transform`` names them (joined with '+')."""

def copy_transform_table() -> str:
    """The copy transforms as the Markdown table of docs/attacks.md (a test keeps the two equal)."""
    rows = [f"| `{entry.name}` | {entry.copies_are} | {entry.plan_copies} | {entry.paper} |" for entry in COPY_TRANSFORMS.values()]
    return "\n".join(["| Copies of | What one copy is (the `copies` setting) | The plan's most | Paper |", "|---|---|---|---|", *rows])


TRANSFORMS: dict[str, Callable[..., Any]] = {"identity": Identity, "di": InputDiversity, **{name: entry.kind for name, entry in COPY_TRANSFORMS.items()}}
"""Transforms by name, each with its paper's settings."""


def transform_from_name(spec: str) -> Any:
    """The transform named ``spec``: a name of TRANSFORMS or names joined by '+' (``"admix+di"``: DI
    on every Admix copy), each with its paper's settings. Unknown names raise ValueError."""
    names = [name.strip().lower() for name in spec.split("+")]
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown or not spec.strip():
        raise ValueError(f"unknown transform {spec!r}; known: {', '.join(TRANSFORMS)} (join with '+')")
    return compose(*(TRANSFORMS[name]() for name in names))

