"""Defense transforms against numpy / PIL / scipy / skimage references on tiny images, and EOT."""

from __future__ import annotations

import io

import numpy as np
import pytest

from nips_adv.defenses.eot import expectation_over_transformation
from nips_adv.defenses.transforms import (
    BitDepthReduction,
    Compose,
    CornerCrops,
    DefenseTransform,
    GaussianNoise,
    HorizontalFlip,
    JpegCompression,
    MedianSmoothing,
    RandomResizePad,
    TotalVariationSmoothing,
)


def run_transform(transform, pixels: np.ndarray, *, seed: int | None = None, runs: int = 1) -> list[np.ndarray]:
    """The transform's output for ``pixels`` in a fresh graph (graph seed ``seed``), ``runs`` session runs."""
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        if seed is not None:
            tf1.set_random_seed(seed)
        placeholder = tf1.placeholder(tf.float32, [None, None, None, 3])
        output = transform(placeholder)
        with tf1.Session(graph=graph) as session:
            return [session.run(output, {placeholder: pixels}) for _ in range(runs)]


def weighted_sum_gradient(transform, pixels: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """d sum(transform(pixels) * weights) / d pixels; None where TF has no gradient."""
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf1.placeholder(tf.float32, pixels.shape)
        objective = tf.reduce_sum(transform(placeholder) * weights)
        (gradient,) = tf1.gradients(objective, [placeholder])
        if gradient is None:
            return None
        with tf1.Session(graph=graph) as session:
            return session.run(gradient, {placeholder: pixels})


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """Two 24x32 crops of a real photo (skimage's bundled cat), float32 0..255, shape (2, 24, 32, 3)."""
    from skimage import data

    cat = data.chelsea().astype(np.float32)
    return np.stack([cat[100:124, 150:182], cat[200:224, 40:72]])


@pytest.fixture(scope="module")
def noisy_pixels() -> np.ndarray:
    """Non-integer pixel values across the whole range, shape (2, 9, 11, 3)."""
    return np.random.default_rng(0).uniform(0, 255, size=(2, 9, 11, 3)).astype(np.float32)


def test_every_transform_follows_the_interface():
    for transform in (
        RandomResizePad(copies=3),
        JpegCompression(),
        BitDepthReduction(),
        MedianSmoothing(),
        TotalVariationSmoothing(),
        HorizontalFlip(),
        GaussianNoise(),
        CornerCrops(),
        Compose([HorizontalFlip(), RandomResizePad(copies=2)]),
    ):
        assert isinstance(transform, DefenseTransform)
        assert isinstance(transform.name, str) and transform.name
        assert transform.copies >= 1


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_bit_depth_equals_the_numpy_formula_exactly(noisy_pixels, bits):
    levels = 2**bits - 1
    expected = np.round(noisy_pixels * np.float32(levels / 255.0)) * np.float32(255.0 / levels)
    (squeezed,) = run_transform(BitDepthReduction(bits), noisy_pixels)
    np.testing.assert_array_equal(squeezed, expected)
    assert len(np.unique(squeezed)) <= levels + 1


def test_straight_through_keeps_the_forward_pass_and_passes_the_gradient(photo, noisy_pixels):
    weights = np.random.default_rng(1).normal(size=photo.shape).astype(np.float32)
    for plain, straight in (
        (BitDepthReduction(4), BitDepthReduction(4, straight_through=True)),
        (JpegCompression(60), JpegCompression(60, straight_through=True)),
    ):
        np.testing.assert_array_equal(run_transform(straight, photo)[0], run_transform(plain, photo)[0])
        np.testing.assert_array_equal(weighted_sum_gradient(straight, photo, weights), weights)
    # Without it, rounding has no gradient: an evaluation has to ask for straight-through.
    assert weighted_sum_gradient(BitDepthReduction(4), noisy_pixels, np.ones_like(noisy_pixels)) is None


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_matches_pil_at_the_same_quality(photo, quality):
    from PIL import Image

    (reencoded,) = run_transform(JpegCompression(quality), photo)
    for image, ours in zip(photo, reencoded):
        buffer = io.BytesIO()
        Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
        reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32)
        assert ours.shape == image.shape
        # libjpeg builds may differ in a few rounding steps: bound the mean, not each pixel.
        assert np.abs(ours - reference).mean() < 0.5
        assert np.abs(ours - image).mean() > 0.5  # and the re-encoding did change the image


@pytest.mark.parametrize("size", [1, 3, 5])
def test_median_equals_scipy_with_mirrored_edges(noisy_pixels, size):
    from scipy.ndimage import median_filter

    (smoothed,) = run_transform(MedianSmoothing(size), noisy_pixels)
    expected = median_filter(noisy_pixels, size=(1, size, size, 1), mode="reflect")
    np.testing.assert_array_equal(smoothed, expected)


def test_median_rejects_even_sizes():
    with pytest.raises(ValueError, match="odd"):
        MedianSmoothing(4)


def test_total_variation_matches_skimage_chambolle(photo):
    from skimage.restoration import denoise_tv_chambolle

    transform = TotalVariationSmoothing(weight=0.1, iterations=12)
    (smoothed,) = run_transform(transform, photo)
    for image, ours in zip(photo, smoothed):
        reference = denoise_tv_chambolle(image / 255.0, weight=0.1, eps=0.0, max_num_iter=13, channel_axis=-1)
        np.testing.assert_allclose(ours, np.clip(reference * 255.0, 0, 255), atol=0.02)
    # It smooths: total variation falls.
    variation = lambda x: np.abs(np.diff(x, axis=1)).sum() + np.abs(np.diff(x, axis=2)).sum()  # noqa: E731
    assert variation(smoothed) < 0.7 * variation(photo)


def test_total_variation_gradient_is_finite_on_flat_images():
    flat = np.full((1, 6, 6, 3), 128.0, np.float32)
    gradient = weighted_sum_gradient(TotalVariationSmoothing(iterations=5), flat, np.ones_like(flat))
    assert np.isfinite(gradient).all()


def test_flip_is_exact_and_copy_major(noisy_pixels):
    (both,) = run_transform(HorizontalFlip(), noisy_pixels)
    batch = len(noisy_pixels)
    np.testing.assert_array_equal(both[:batch], noisy_pixels)
    np.testing.assert_array_equal(both[batch:], noisy_pixels[:, :, ::-1])
    (mirrored,) = run_transform(HorizontalFlip(with_original=False), noisy_pixels)
    np.testing.assert_array_equal(mirrored, noisy_pixels[:, :, ::-1])


def test_random_resize_pad_shapes_and_nearest_neighbour_content():
    images = np.random.default_rng(2).integers(1, 256, size=(2, 8, 8, 3)).astype(np.float32)
    transform = RandomResizePad(copies=3, min_size=8, output_size=13, pad_value=0.0)
    (output,) = run_transform(transform, images, seed=5)
    assert output.shape == (6, 13, 13, 3)
    sizes_seen = set()
    for row, canvas in enumerate(output):
        original = images[row % 2]  # copy-major: row = copy * batch + image
        content = np.argwhere(canvas.min(axis=-1) > 0)  # the image is >= 1 everywhere, the padding 0
        (top, left), (bottom, right) = content.min(axis=0), content.max(axis=0)
        size = bottom - top + 1
        assert right - left + 1 == size and 8 <= size < 13
        assert (canvas[top : bottom + 1, left : right + 1] > 0).all()
        source = (np.arange(size) * 8) // size  # TF1 nearest neighbour without aligned corners
        np.testing.assert_array_equal(canvas[top : bottom + 1, left : right + 1], original[source][:, source])
        sizes_seen.add(size)
    assert len(sizes_seen) > 1


def test_random_resize_pad_is_deterministic_under_a_graph_seed():
    images = np.random.default_rng(3).uniform(0, 255, size=(4, 10, 10, 3)).astype(np.float32)
    transform = RandomResizePad(copies=2, min_size=10, output_size=16)
    first = run_transform(transform, images, seed=7, runs=2)
    again = run_transform(transform, images, seed=7, runs=2)
    other = run_transform(transform, images, seed=8, runs=1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # fresh draws at each run
    assert not np.array_equal(first[0], other[0])


def test_random_resize_pad_defaults_are_the_papers():
    (output,) = run_transform(RandomResizePad(copies=2), np.zeros((1, 299, 299, 3), np.float32), seed=1)
    assert output.shape == (2, 331, 331, 3)
    assert (output == 127.5).sum() > 0


def test_compose_multiplies_copies_and_applies_in_order(noisy_pixels):
    chain = Compose([HorizontalFlip(), BitDepthReduction(3), HorizontalFlip()])
    assert chain.copies == 4
    assert chain.name == "flip(+original)+bits(3)+flip(+original)"
    (output,) = run_transform(chain, noisy_pixels)
    (squeezed,) = run_transform(BitDepthReduction(3), noisy_pixels)
    flipped = squeezed[:, :, ::-1]
    expected = np.concatenate([squeezed, flipped, flipped, squeezed])
    np.testing.assert_array_equal(output, expected)
    (identity,) = run_transform(Compose([]), noisy_pixels)
    np.testing.assert_array_equal(identity, noisy_pixels)


def _toy_gradient_graph(transform, images: np.ndarray, seed: int):
    """A toy linear 'classifier' behind ``transform``: returns (session, fn() -> d loss / d pixels).

    The loss is the mean over the transform's rows, so copies inside the graph give the mean of
    the per-copy gradients, the same quantity as EOT over separate passes.
    """
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        pixels = tf1.constant(images)
        transformed = transform(pixels)
        weights = tf.constant(np.random.default_rng(4).normal(size=transformed.shape[1:]).astype(np.float32))
        per_row = tf.reduce_sum(tf.tanh(transformed / 255.0) * weights, axis=[1, 2, 3])
        copies_mean = tf.reduce_sum(per_row) / transform.copies
        (gradient,) = tf1.gradients(copies_mean, [pixels])
        session = tf1.Session(graph=graph)
    return session, lambda: session.run(gradient)


def test_eot_gradient_is_the_average_of_per_pass_gradients():
    images = np.random.default_rng(5).uniform(0, 255, size=(2, 6, 6, 3)).astype(np.float32)
    transform = RandomResizePad(min_size=6, output_size=9)
    session, gradient = _toy_gradient_graph(transform, images, seed=11)
    with session:
        averaged = expectation_over_transformation(gradient, passes=4)
    session, gradient = _toy_gradient_graph(transform, images, seed=11)  # the same draws again
    with session:
        per_pass = [gradient() for _ in range(4)]
    assert not np.allclose(per_pass[0], per_pass[1])  # the passes really differ
    np.testing.assert_allclose(averaged, np.mean(per_pass, axis=0), rtol=1e-6, atol=1e-9)


def test_copies_in_one_graph_give_the_average_of_per_copy_gradients():
    images = np.random.default_rng(6).uniform(0, 255, size=(2, 6, 6, 3)).astype(np.float32)
    session, both = _toy_gradient_graph(HorizontalFlip(), images, seed=0)
    with session:
        in_graph = both()
    plain_session, plain = _toy_gradient_graph(Compose([]), images, seed=0)
    flip_session, flipped = _toy_gradient_graph(HorizontalFlip(with_original=False), images, seed=0)
    with plain_session, flip_session:
        per_copy = [plain(), flipped()]
    np.testing.assert_allclose(in_graph, np.mean(per_copy, axis=0), rtol=1e-5, atol=1e-7)


def test_eot_rejects_zero_passes():
    with pytest.raises(ValueError, match="passes"):
        expectation_over_transformation(lambda: np.zeros(1), passes=0)


def test_gaussian_noise_has_the_asked_spread_is_clipped_and_replays_under_a_seed():
    """Mid-grey images: the noise's mean ~0 and deviation ~sigma (numpy's reference statistics); at the
    ends of the range it is clipped; copies and session runs draw anew, a seeded graph replays them."""
    grey = np.full((2, 40, 50, 3), 128.0, np.float32)
    first, second = run_transform(GaussianNoise(sigma=8.0, copies=3, seed=4), grey, seed=1, runs=2)
    assert first.shape == (6, 40, 50, 3)
    noise = first - grey[0]
    assert abs(noise.mean()) < 0.2 and abs(noise.std() - 8.0) < 0.2
    assert not np.array_equal(first[:2], first[2:4]) and not np.array_equal(first, second)
    (again, _) = run_transform(GaussianNoise(sigma=8.0, copies=3, seed=4), grey, seed=1, runs=2)
    np.testing.assert_array_equal(again, first)
    (ends,) = run_transform(GaussianNoise(sigma=30.0, copies=1), np.stack([np.zeros((8, 8, 3)), np.full((8, 8, 3), 255.0)]).astype(np.float32))
    assert ends.min() >= 0.0 and ends.max() <= 255.0 and (ends[0] == 0).mean() > 0.4 and (ends[1] == 255).mean() > 0.4
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(sigma=0.0)


def _bilinear_crop_reference(image: np.ndarray, box: list[float]) -> np.ndarray:
    """numpy: the box (fractions, corners aligned) sampled bilinearly onto the image's own grid."""
    height, width = image.shape[:2]
    top, left, bottom, right = box
    rows = top * (height - 1) + np.arange(height) * (bottom - top) * (height - 1) / (height - 1)
    columns = left * (width - 1) + np.arange(width) * (right - left) * (width - 1) / (width - 1)
    row0, column0 = np.floor(rows).astype(int), np.floor(columns).astype(int)
    row1, column1 = np.minimum(row0 + 1, height - 1), np.minimum(column0 + 1, width - 1)
    dy, dx = (rows - row0)[:, None, None], (columns - column0)[None, :, None]
    upper = image[row0][:, column0] * (1 - dx) + image[row0][:, column1] * dx
    lower = image[row1][:, column0] * (1 - dx) + image[row1][:, column1] * dx
    return upper * (1 - dy) + lower * dy


@pytest.mark.parametrize("fraction", [0.95, 0.8, 0.5])
def test_corner_crops_are_the_whole_image_then_four_bilinear_corner_crops(noisy_pixels, fraction):
    crops = CornerCrops(fraction)
    (views,) = run_transform(crops, noisy_pixels)
    batch = len(noisy_pixels)
    assert views.shape == (5 * batch, *noisy_pixels.shape[1:])
    np.testing.assert_allclose(views[:batch], noisy_pixels, atol=1e-3)  # the whole image, unchanged
    for copy, box in enumerate(crops.boxes()):
        for row in range(batch):
            expected = _bilinear_crop_reference(noisy_pixels[row].astype(np.float64), box)
            np.testing.assert_allclose(views[copy * batch + row], expected, atol=1e-2, err_msg=f"copy {copy}")
    # Each corner view keeps its own corner pixel of the image.
    for copy, (row, column) in enumerate([(0, 0), (0, -1), (-1, 0), (-1, -1)], start=1):
        np.testing.assert_allclose(views[copy * batch, row, column], noisy_pixels[0, row, column], atol=1e-3)


def test_corner_crops_reject_a_fraction_outside_zero_to_one():
    for fraction in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="crop fraction"):
            CornerCrops(fraction)


def test_corner_crops_pass_a_gradient_to_every_pixel_they_sample(noisy_pixels):
    """An adaptive attack differentiates through the crops: a weighted sum's gradient is finite and
    reaches the whole image (the first view is the image itself)."""
    weights = np.random.default_rng(3).normal(size=(5 * len(noisy_pixels), *noisy_pixels.shape[1:])).astype(np.float32)
    gradient = weighted_sum_gradient(CornerCrops(0.9), noisy_pixels, weights)
    assert gradient is not None and np.all(np.isfinite(gradient)) and np.all(gradient != 0)
