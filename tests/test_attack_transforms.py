"""Transfer-attack transforms (TF graph) and gradient rules (numpy) against small numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from nips_adv.attacks.gradient_rules import (
    VarianceTuning,
    mean_abs,
    momentum_update,
    nesterov_point,
)
from nips_adv.attacks.transforms import (
    SIA_OPERATIONS,
    Admix,
    BlockShuffleRotation,
    Composed,
    Identity,
    InputDiversity,
    ScaleInvariance,
    StructureInvariance,
    compose,
    transform_from_name,
)


def images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype(np.float32)


def run(build, *arrays: np.ndarray, seed: int = 1):
    """``build(*constants)`` in a fresh graph (graph seed ``seed``), evaluated in a Session."""
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        placeholders = [tf1.placeholder(tf.float32, [None, None, None, 3]) for _ in arrays]
        outputs = build(*placeholders)
        with tf1.Session(graph=graph) as session:
            return session.run(outputs, dict(zip(placeholders, arrays)))


def bilinear_resize_rows(array: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of ``axis`` to ``size`` (TF2's ``tf.image.resize`` without antialias)."""
    length = array.shape[axis]
    source = np.clip((np.arange(size) + 0.5) * length / size - 0.5, 0, length - 1)
    lower = np.floor(source).astype(int)
    upper = np.minimum(lower + 1, length - 1)
    weight = (source - lower).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    return np.take(array, lower, axis=axis) * (1 - weight) + np.take(array, upper, axis=axis) * weight


def nearest_resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.minimum(np.floor((np.arange(height) + 0.5) * array.shape[1] / height).astype(int), array.shape[1] - 1)
    columns = np.minimum(np.floor((np.arange(width) + 0.5) * array.shape[2] / width).astype(int), array.shape[2] - 1)
    return array[:, rows][:, :, columns]


# --- shapes, copies, names -------------------------------------------------------------------

@pytest.mark.parametrize(
    "transform, copies",
    [
        (Identity(), 1),
        (InputDiversity(probability=1.0, scale=1.5), 1),
        (ScaleInvariance(), 5),
        (Admix(), 15),
        (BlockShuffleRotation(), 20),
        (StructureInvariance(copies=4), 4),
        (compose(ScaleInvariance(scales=3), InputDiversity(probability=1.0)), 3),
        (compose(Admix(scales=2, mixes=2), BlockShuffleRotation(copies=3)), 12),
    ],
    ids=lambda value: getattr(value, "name", value),
)
def test_output_shape_copy_count_and_gradient_flow(transform, copies):
    from nips_adv.models.tf_compat import tf

    pixels = images((2, 9, 8, 3))
    weights = images((copies * 2, 9, 8, 3), seed=5)

    def build(x):
        out = transform(x)
        return out, tf.gradients(tf.reduce_sum(out * weights), x)[0]

    out, gradient = run(build, pixels)
    assert transform.copies == copies
    assert out.shape == (copies * 2, 9, 8, 3)
    assert np.all(np.isfinite(out))
    assert gradient is not None and gradient.shape == pixels.shape and np.abs(gradient).sum() > 0


def test_transform_from_name_composes_and_rejects_unknown_names():
    combined = transform_from_name("admix+di")
    assert isinstance(combined, Composed) and combined.name == "admix+di" and combined.copies == 15
    assert transform_from_name("bsr").copies == 20 and transform_from_name("SIA").name == "sia"
    with pytest.raises(ValueError, match="unknown transform 'si\\+jpeg'"):
        transform_from_name("si+jpeg")


@pytest.mark.parametrize(
    "make",
    [lambda: InputDiversity(probability=1.5), lambda: ScaleInvariance(scales=0), lambda: Admix(mixes=0),
     lambda: BlockShuffleRotation(copies=0), lambda: StructureInvariance(operations=("flip",))],
)
def test_settings_that_make_no_sense_are_refused(make):
    with pytest.raises(ValueError):
        make()


# --- DI ----------------------------------------------------------------------------------------

def test_di_with_probability_zero_is_the_identity_and_one_keeps_the_shape():
    pixels = images((2, 8, 8, 3))
    same, diverse = run(lambda x: (InputDiversity(probability=0.0)(x), InputDiversity(probability=1.0, scale=1.5)(x)), pixels)
    np.testing.assert_array_equal(same, pixels)
    assert diverse.shape == pixels.shape and not np.array_equal(diverse, pixels)


def test_di_given_draws_matches_numpy_resize_pad_resize():
    pixels = images((1, 8, 8, 3))
    di = InputDiversity(probability=1.0, scale=1.5)  # canvas 12 x 12
    out = run(lambda x: di.apply(x, grow=2, top=1, left=0), pixels)
    rescaled = nearest_resize(pixels, 10, 10)
    padded = np.pad(rescaled, [(0, 0), (1, 1), (0, 2), (0, 0)])
    expected = bilinear_resize_rows(bilinear_resize_rows(padded, 8, axis=1), 8, axis=2)
    np.testing.assert_allclose(out, expected, atol=1e-3)


# --- SI and Admix ------------------------------------------------------------------------------

def test_si_copies_are_the_image_divided_by_powers_of_two():
    pixels = images((2, 4, 4, 3))
    in_pixels, centred = run(lambda x: (ScaleInvariance(center=0.0)(x), ScaleInvariance()(x)), pixels)
    for i in range(5):
        np.testing.assert_array_equal(in_pixels[2 * i : 2 * i + 2], pixels / 2**i)
        # The paper's x / 2^i on the networks' [-1, 1] range, mapped back to pixels.
        network = pixels / 127.5 - 1
        np.testing.assert_allclose(centred[2 * i : 2 * i + 2], (network / 2**i + 1) * 127.5, atol=1e-4)


def test_admix_equals_its_formula_for_given_partners():
    pixels = images((3, 4, 4, 3))
    partners = np.array([[1, 2, 0], [2, 0, 1]], np.int32)
    admix = Admix(scales=3, mixes=2, strength=0.2)
    out = run(lambda x: admix.apply(x, partners), pixels)
    network = pixels / 127.5 - 1
    for mix in range(2):
        mixed = network + 0.2 * network[partners[mix]]
        for scale in range(3):
            copy = mix * 3 + scale
            np.testing.assert_allclose(out[3 * copy : 3 * copy + 3], (mixed / 2**scale + 1) * 127.5, atol=1e-3)


def test_admix_draws_another_image_of_the_batch_and_differentiates_only_through_x():
    from nips_adv.models.tf_compat import tf

    pixels = images((2, 4, 4, 3))
    admix = Admix(scales=1, mixes=3)

    def build(x):
        out = admix(x)
        return out, tf.gradients(tf.reduce_sum(out), x)[0]

    out, gradient = run(build, pixels)
    # With two images, each image's partner is the other one.
    expected = run(lambda x: admix.apply(x, np.array([[1, 0]] * 3, np.int32)), pixels)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    np.testing.assert_allclose(gradient, np.full(pixels.shape, 3.0), atol=1e-6)


# --- BSR ---------------------------------------------------------------------------------------

def numpy_block_shuffle(pixels, row_sizes, column_sizes, row_order, column_orders):
    row_starts, column_starts = np.cumsum([0, *row_sizes]), np.cumsum([0, *column_sizes])
    rows = []
    for k, source_row in enumerate(row_order):
        strip = pixels[:, row_starts[source_row] : row_starts[source_row + 1]]
        rows.append(np.concatenate(
            [strip[:, :, column_starts[c] : column_starts[c + 1]] for c in column_orders[k]], axis=2))
    return np.concatenate(rows, axis=1)


@pytest.mark.parametrize("height, width", [(8, 8), (9, 7)])
def test_bsr_without_rotation_is_numpy_block_permutation(height, width):
    pixels = images((2, height, width, 3))
    bsr = BlockShuffleRotation(blocks=2, copies=2)
    row_orders = np.array([[1, 0], [0, 1]], np.int32)
    column_orders = np.array([[[1, 0], [0, 1]], [[1, 0], [1, 0]]], np.int32)
    out = run(lambda x: bsr.apply(x, row_orders, column_orders, np.zeros((2, 2, 2), np.float32)), pixels)
    row_sizes, column_sizes = [height // 2, height - height // 2], [width // 2, width - width // 2]
    for copy in range(2):
        expected = numpy_block_shuffle(pixels, row_sizes, column_sizes, row_orders[copy], column_orders[copy])
        np.testing.assert_array_equal(out[2 * copy : 2 * copy + 2], expected)


def test_bsr_with_zero_angle_keeps_each_images_pixels():
    pixels = images((2, 9, 8, 3))
    out = run(BlockShuffleRotation(blocks=2, max_angle=0.0, copies=4), pixels)
    for copy in range(4):
        for image in range(2):
            np.testing.assert_array_equal(np.sort(out[2 * copy + image], axis=None), np.sort(pixels[image], axis=None))
    assert any(not np.array_equal(out[2 * copy : 2 * copy + 2], pixels) for copy in range(4))


def test_bsr_rotation_by_a_right_angle_is_numpy_rot90():
    pixels = images((2, 5, 5, 3))
    bsr = BlockShuffleRotation(blocks=1, copies=2)
    out = run(lambda x: bsr.apply(x, np.zeros((2, 1), np.int32), np.zeros((2, 1, 1), np.int32),
                                  np.array([90.0, 180.0], np.float32).reshape(2, 1, 1)), pixels)
    np.testing.assert_allclose(out[:2], np.rot90(pixels, k=1, axes=(1, 2)), atol=1e-3)
    np.testing.assert_allclose(out[2:], pixels[:, ::-1, ::-1], atol=1e-3)


def test_bsr_rotates_each_block_about_its_own_centre():
    pixels = images((1, 6, 6, 3))
    bsr = BlockShuffleRotation(blocks=2, copies=1)
    angles = np.array([[[180.0, 0.0], [0.0, 90.0]]], np.float32)
    out = run(lambda x: bsr.apply(x, np.array([[0, 1]], np.int32), np.array([[[0, 1], [0, 1]]], np.int32), angles), pixels)
    np.testing.assert_allclose(out[:, :3, :3], pixels[:, 2::-1, 2::-1], atol=1e-3)
    np.testing.assert_array_equal(out[:, :3, 3:], pixels[:, :3, 3:])
    np.testing.assert_allclose(out[:, 3:, 3:], np.rot90(pixels[:, 3:, 3:], k=1, axes=(1, 2)), atol=1e-3)


# --- SIA ---------------------------------------------------------------------------------------

def sia_block(block: np.ndarray, operation: str, seed: int = 3) -> np.ndarray:
    """One SIA block, the whole image, under ``operation``."""
    sia = StructureInvariance(blocks=1, copies=1)
    choice = np.array([[[SIA_OPERATIONS.index(operation)]]], np.int32)
    size = np.array(block.shape[1:3], np.int32)
    return run(lambda x: sia.apply(x, size[:1], size[1:], choice), block, seed=seed)


@pytest.mark.parametrize(
    "operation, reference",
    [
        ("vertical_flip", lambda b: b[:, ::-1]),
        ("horizontal_flip", lambda b: b[:, :, ::-1]),
        ("rotate_180", lambda b: b[:, ::-1, ::-1]),
        # down to floor(0.8 * side) + 1 and back, bilinear
        ("resize", lambda b: bilinear_resize_rows(bilinear_resize_rows(
            bilinear_resize_rows(bilinear_resize_rows(b, 5, axis=1), 6, axis=2), 6, axis=1), 7, axis=2)),
        ("dct", lambda b: scipy.fft.idctn(
            scipy.fft.dctn(b, type=2, axes=(1, 2), norm="ortho") * np.array([1] * 4 + [0] * 2)[None, :, None, None]
            * np.array([1] * 5 + [0] * 2)[None, None, :, None], type=2, axes=(1, 2), norm="ortho")),
    ],
)
def test_sia_deterministic_block_operations_equal_numpy(operation, reference):
    block = images((2, 6, 7, 3))
    np.testing.assert_allclose(sia_block(block, operation), reference(block.astype(np.float64)), atol=2e-3)


def test_sia_random_block_operations_keep_their_form():
    block = images((2, 6, 7, 3))
    shifted_rows = sia_block(block, "vertical_shift")
    assert any(np.allclose(shifted_rows, np.roll(block, k, axis=1), atol=1e-3) for k in range(6))
    shifted_columns = sia_block(block, "horizontal_shift", seed=4)
    assert any(np.allclose(shifted_columns, np.roll(block, k, axis=2), atol=1e-3) for k in range(7))
    ratio = sia_block(block, "scale") / block
    assert 0 <= ratio.min() < 1 and np.ptp(ratio) < 1e-4
    noisy = sia_block(block, "noise")
    assert 0 < np.abs(noisy - block).max() <= 16 + 1e-3 and noisy.min() >= 0 and noisy.max() <= 255
    dropped = sia_block(block, "dropout")
    zero = np.all(dropped == 0, axis=3)
    assert np.allclose(dropped[~zero], block[~zero], atol=1e-3) and 0 < zero.mean() < 0.5


def test_sia_applies_each_copys_chosen_operation_to_each_block():
    pixels = images((2, 7, 8, 3))
    sia = StructureInvariance(blocks=2, copies=2, operations=("vertical_flip", "horizontal_flip", "rotate_180"))
    choices = np.array([[[0, 1], [2, 0]], [[2, 2], [1, 0]]], np.int32)
    out = run(lambda x: sia.apply(x, np.array([3, 4], np.int32), np.array([5, 3], np.int32), choices), pixels)
    flips = [lambda b: b[:, ::-1], lambda b: b[:, :, ::-1], lambda b: b[:, ::-1, ::-1]]
    rows, columns = [(0, 3), (3, 7)], [(0, 5), (5, 8)]
    for copy in range(2):
        for i, (top, bottom) in enumerate(rows):
            for j, (left, right) in enumerate(columns):
                np.testing.assert_allclose(out[2 * copy : 2 * copy + 2, top:bottom, left:right],
                                           flips[choices[copy, i, j]](pixels[:, top:bottom, left:right]), atol=1e-3)


def test_sia_copies_differ_and_stay_finite():
    pixels = images((1, 12, 12, 3))
    out = run(StructureInvariance(copies=3), pixels)
    assert out.shape == (3, 12, 12, 3) and np.all(np.isfinite(out))
    assert not np.allclose(out[0], out[1])


# --- composition -------------------------------------------------------------------------------

def test_composition_applies_the_later_transform_to_every_copy_copy_major():
    pixels = images((2, 6, 6, 3))
    si = ScaleInvariance(scales=2, center=0.0)
    composed, plain = run(lambda x: (compose(si, InputDiversity(probability=0.0), si)(x), si(x)), pixels)
    assert composed.shape == (8, 6, 6, 3)
    for outer in range(2):
        for inner in range(2):
            copy = outer * 2 + inner
            np.testing.assert_array_equal(composed[2 * copy : 2 * copy + 2], pixels / 2 ** (outer + inner))
    np.testing.assert_array_equal(plain[:2], pixels)
    assert compose().copies == 1 and compose(si) is si


# --- gradient rules ----------------------------------------------------------------------------

def test_momentum_update_adds_the_l1_normalised_gradient():
    gradient = images((2, 3, 3, 3)) - 128
    momentum = images((2, 3, 3, 3), seed=1)
    updated = momentum_update(momentum, gradient, decay=0.7)
    per_image = np.abs(gradient).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(updated, 0.7 * momentum + gradient / per_image, rtol=1e-5)
    assert np.all(momentum_update(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)), 1.0) == 0)
    assert mean_abs(np.zeros((1, 2, 2, 3))).min() > 0


def test_nesterov_point_is_x_plus_alpha_mu_g():
    x, g = images((2, 3, 3, 3)), images((2, 3, 3, 3), seed=1) - 128
    np.testing.assert_allclose(nesterov_point(x, g, step=1.6, decay=1.0), x + 1.6 * g, rtol=1e-6)
    np.testing.assert_allclose(nesterov_point(x, g, step=2.0, decay=0.5, direction=-1.0), x - g, rtol=1e-6)


def test_variance_is_mean_sampled_gradient_minus_current_on_a_linear_gradient():
    slope = images((2, 3, 3, 3), seed=2) / 255
    offset = images((2, 3, 3, 3), seed=3)

    def gradient_at(points: np.ndarray) -> np.ndarray:  # gradient of a quadratic loss
        calls.append(points.copy())
        return slope * points + offset

    calls: list[np.ndarray] = []
    x = images((2, 3, 3, 3), seed=4)
    current = gradient_at(x)
    calls.clear()
    tuning = VarianceTuning(samples=20, beta=1.5)
    variance = tuning.variance(gradient_at, x, current, eps=8.0, rng=np.random.default_rng(7))
    neighbours = tuning.neighbours(x, eps=8.0, rng=np.random.default_rng(7))
    assert len(calls) == 20 and all(np.array_equal(a, b) for a, b in zip(calls, neighbours))
    assert max(np.abs(n - x).max() for n in neighbours) <= 12.0 + 1e-4  # beta * eps
    np.testing.assert_allclose(variance, slope * (np.mean(neighbours, axis=0) - x), atol=1e-3)
    np.testing.assert_allclose(variance, np.mean([gradient_at(n) for n in neighbours], axis=0) - current, atol=1e-3)


# --- logit loss ----------------------------------------------------------------------------------

def test_logit_loss_is_minus_the_weighted_target_logit_and_its_gradient_raises_it():
    from nips_adv.attacks.losses import logit_loss
    from nips_adv.models.tf_compat import tf, tf1

    logits = np.random.default_rng(0).normal(size=(2, 1000)).astype(np.float32)
    labels = np.array([[5, 1000], [1, 1]], np.int32)
    weights = np.array([[0.5, 2.0], [1.0, 0.0]], np.float32)
    graph = tf.Graph()
    with graph.as_default():
        logits_tensor = tf.constant(logits)
        loss = logit_loss(logits_tensor, tf.constant(labels), tf.constant(weights))
        gradient = tf.gradients(loss, logits_tensor)[0]
        with tf1.Session(graph=graph) as session:
            value, slope = session.run([loss, gradient])
    expected = -(0.5 * logits[0, 4] + 2.0 * logits[0, 999] + 1.0 * logits[1, 0])
    assert value == pytest.approx(expected, rel=1e-6)
    assert slope[0, 4] == -0.5 and slope[0, 999] == -2.0 and slope[1, 0] == -1.0
    assert np.count_nonzero(slope) == 3
