"""Defense recipes: parsing, the defended model (averaging, seeds, EOT), and nips-defense's options and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nips_adv.cli.defense import defense_command
from nips_adv.contract.images import write_png
from nips_adv.defenses.denoiser import DenoiserWeightsError
from nips_adv.defenses.recipes import (
    DEFAULT_RECIPE,
    PACKAGED_DENOISER,
    DefendedClassifier,
    RecipeError,
    parse_recipe,
)
from nips_adv.defenses.transforms import (
    Compose,
    GaussianNoise,
    HorizontalFlip,
    JpegCompression,
    RandomResizePad,
    WithOriginal,
)
from nips_adv.models.classifier import Classifier, Network

SIDE = 8


def _toy_matrix() -> np.ndarray:
    return np.random.default_rng(3).normal(0, 3.0, size=(SIDE * SIDE * 3, 1000)).astype(np.float32)


@pytest.fixture(scope="module")
def toy_networks(tmp_path_factory: pytest.TempPathFactory) -> list[Network]:
    """A linear toy network on 8x8 images (logits = pixels @ W), restored from a real checkpoint."""
    from nips_adv.models.networks import Architecture
    from nips_adv.models.tf_compat import tf, tf1

    def build_logits(images, scope):
        with tf1.variable_scope(scope):
            weights = tf1.get_variable("weights", [SIDE * SIDE * 3, 1000])
        return tf.matmul(tf.reshape(images, [-1, SIDE * SIDE * 3]), weights)

    toy = Architecture("toy", "linear", "Toy", 1000, SIDE, lambda pixels: pixels / 255.0, build_logits)
    matrix = _toy_matrix()
    graph = tf.Graph()
    with graph.as_default():
        variable = tf1.get_variable("Toy/weights", initializer=matrix)
        with tf1.Session(graph=graph) as session:
            session.run(variable.initializer)
            folder = tmp_path_factory.mktemp("toy")
            prefix = tf1.train.Saver([variable]).save(session, str(folder / "toy.ckpt"), write_meta_graph=False)
    return [Network("toy", toy, Path(prefix), "Toy")]


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(4, SIDE, SIDE, 3)).astype(np.uint8)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_recipes_parse_into_chains_of_transforms() -> None:
    assert parse_recipe("plain").transform is None
    jpeg = parse_recipe("jpeg:50")
    assert jpeg.transform == JpegCompression(50, straight_through=True) and not jpeg.random
    chain = parse_recipe("flip+resize-pad:3", seed=4)
    assert isinstance(chain.transform, Compose) and chain.random and chain.transform.copies == 6
    assert isinstance(chain.transform.transforms[0], HorizontalFlip)
    assert isinstance(chain.transform.transforms[1], RandomResizePad) and chain.transform.transforms[1].seed is not None


def test_noise_and_several_denoisers_parse_into_views() -> None:
    noisy = parse_recipe("noise:12+denoiser", seed=3)
    assert noisy.random and isinstance(noisy.transform, Compose) and noisy.transform.copies == 2
    assert noisy.transform.transforms[0] == GaussianNoise(sigma=12.0, seed=300)
    if PACKAGED_DENOISER.is_file():
        two = parse_recipe(f"denoiser:{PACKAGED_DENOISER}:{PACKAGED_DENOISER}").transform
        assert two is not None and two.copies == 2 and two.name == "denoiser(lgd_lite1_lite2.npz,lgd_lite1_lite2.npz)"


@pytest.mark.parametrize("text", ["blur", "jpeg:high", "jpeg:0", "median:4", "flip:2", "resize-pad+sharpen", "noise:0", "noise:loud"])
def test_bad_recipes_raise_one_line_naming_the_step(text: str) -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text)
    message = str(caught.value)
    assert "\n" not in message and text.split("+")[-1].split(":")[0] in message


def test_routed_recipes_parse_into_branches_split_by_increasing_levels() -> None:
    routed = parse_recipe("plain, from:3 ,flip,from:8,noise:12+flip", seed=1)
    assert routed.transform is None and not routed.plain and routed.random
    assert routed.levels == (3.0, 8.0) and [branch.text for branch in routed.branches] == ["plain", "flip", "noise:12+flip"]
    assert routed.branches[0].plain and not routed.branches[1].random
    np.testing.assert_array_equal(routed.branch_of(np.array([0.0, 2.9, 3.0, 7.5, 8.0, 40.0])), [0, 0, 1, 1, 2, 2])
    assert parse_recipe("plain").plain and not parse_recipe("flip").plain


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("plain,from:3", "must end with a recipe"),
        ("plain,from:8,flip,from:3,jpeg", "levels must increase"),
        ("plain,3,flip", "'3'"),
        ("plain,from:loud,flip", "'from:loud'"),
        ("plain,from:-1,flip", "'from:-1'"),
        ("plain,,flip", "position 2"),
        ("plain,from:3,from:4,flip", "position 3"),
        ("plain,from:3,blur", "'blur'"),
        ("plain,from:3,flip|crops", "last branch cannot be a consensus"),
        ("plain|flip,from:3,crops", "each side of |"),
        ("flip|,from:3,crops", "each side of |"),
    ],
)
def test_bad_routed_recipes_raise_one_line_naming_the_part(text: str, named: str) -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text)
    message = str(caught.value)
    assert "\n" not in message and named in message


def test_versus_plain_ends_a_recipe_and_adds_the_image_as_it_is_as_a_last_view() -> None:
    recipe = parse_recipe("flip+versus-plain:0.7")
    assert isinstance(recipe.transform, WithOriginal) and recipe.transform.copies == 3 and recipe.versus_plain == 0.7
    assert recipe.transform.inner == HorizontalFlip() and not recipe.plain
    assert parse_recipe("noise:12+flip+versus-plain").versus_plain == 0.5
    assert parse_recipe("flip").versus_plain == 0.0


@pytest.mark.parametrize("text", ["versus-plain", "versus-plain+flip", "flip+versus-plain+jpeg", "flip+versus-plain:0", "flip+versus-plain:much"])
def test_misplaced_or_bad_versus_plain_raises_one_line_naming_it(text: str) -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text)
    message = str(caught.value)
    assert "\n" not in message and "versus-plain" in message


def test_the_colour_noise_level_is_the_low_percentile_of_the_filtered_colour_differences() -> None:
    from scipy.ndimage import correlate

    from nips_adv.defenses.noise_level import colour_noise_level

    images = np.random.default_rng(5).integers(0, 256, size=(3, 12, 10, 3)).astype(np.uint8)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    expected = []
    for image in images.astype(np.float64):
        filtered = [np.abs(correlate(image[..., channel] - image[..., 1], kernel)[1:-1, 1:-1]) for channel in (0, 2)]
        expected.append(np.percentile(filtered[0] + filtered[1], 10))
    np.testing.assert_allclose(colour_noise_level(images), expected)
    with pytest.raises(ValueError, match="shape"):
        colour_noise_level(images[..., :2])
    tiny = np.stack([np.full((1, 2, 3), 40), np.array([[[0, 0, 0], [255, 0, 0]]])]).astype(np.uint8)
    assert colour_noise_level(tiny).shape == (2,)  # a 1 x 2 image is measured on its edge-extended self


def test_noise_in_each_channel_raises_the_level_and_grey_noise_does_not() -> None:
    """A smooth photograph reads low; +-4 drawn per channel (an eps-4 sign attack's texture) reads high;
    the same +-16 added to all three channels leaves the colour differences, and the level, as they were."""
    import skimage.data

    from nips_adv.defenses.noise_level import colour_noise_level

    photo = skimage.data.chelsea()[:299, 76:375].astype(np.int64)
    rng = np.random.default_rng(0)
    coloured = np.clip(photo + 4 * rng.choice([-1, 1], size=photo.shape), 0, 255)
    inside = np.clip(photo, 16, 239)
    grey = inside + 16 * rng.choice([-1, 1], size=photo.shape[:2])[..., None]
    low, noisy, same, greyed = colour_noise_level(np.stack([photo, coloured, inside, grey]))
    assert low < 3 <= 8 <= noisy and greyed == same


def test_a_routed_recipe_classifies_and_differentiates_each_image_through_its_branch(toy_networks) -> None:
    """Flat images (level 0) go to the plain branch, noisy ones to flip: the routed logits and gradients are
    those branches' own, row by row, and the logits are log-probabilities whichever branch answered."""
    from nips_adv.defenses.noise_level import colour_noise_level
    from nips_adv.models.tf_compat import tf

    rng = np.random.default_rng(2)
    flat = np.broadcast_to(rng.integers(0, 256, size=(2, 1, 1, 3)), (2, SIDE, SIDE, 3))
    noisy = rng.integers(0, 256, size=(2, SIDE, SIDE, 3))
    mixed = np.stack([noisy[0], flat[0], noisy[1], flat[1]]).astype(np.uint8)
    assert list(colour_noise_level(mixed) >= 3) == [True, False, True, False]
    labels = np.array([3, 4, 5, 6])

    def loss(logits, labels, weights):
        return tf.reduce_sum(logits[:, 5])

    with Classifier(toy_networks) as classifier:
        routed = DefendedClassifier(classifier, parse_recipe("plain,from:3,flip"))
        flipped = DefendedClassifier(classifier, parse_recipe("flip"))
        logits = routed.logits(mixed)
        np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(logits[[1, 3]], np.log(_softmax(classifier.logits(mixed[[1, 3]]))), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits[[0, 2]], flipped.logits(mixed[[0, 2]]), rtol=1e-5, atol=1e-5)
        gradient = routed.gradient_function(loss)(mixed, labels)
        np.testing.assert_allclose(gradient[[1, 3]], classifier.gradient_function(loss)(mixed[[1, 3]], labels[[1, 3]]), rtol=1e-5)
        np.testing.assert_allclose(gradient[[0, 2]], flipped.gradient_function(loss)(mixed[[0, 2]], labels[[0, 2]]), rtol=1e-5)
        assert not np.allclose(gradient[[0, 2]], classifier.gradient_function(loss)(mixed[[0, 2]], labels[[0, 2]]))


def test_a_consensus_branch_answers_where_its_recipes_agree_and_passes_the_rest_on(toy_networks) -> None:
    """``flip|crops``: where the mirror's and the crops' top classes agree, the log mean of their probabilities
    (and the mean of their gradients); elsewhere the next branch's answer and gradient, row by row; each
    branch counts the images it classified."""
    from nips_adv.models.tf_compat import tf

    images = np.random.default_rng(11).integers(0, 256, size=(12, SIDE, SIDE, 3)).astype(np.uint8)
    labels = np.arange(12) + 1

    def loss(logits, labels, weights):
        return tf.reduce_sum(logits[:, 5])

    with Classifier(toy_networks) as classifier:
        routed = DefendedClassifier(classifier, parse_recipe("flip|crops,from:1000,bits:3"))
        assert [branch.text for branch in routed.recipe.branches] == ["flip|crops", "bits:3"]
        flip, crops, last = (DefendedClassifier(classifier, parse_recipe(text)) for text in ("flip", "crops", "bits:3"))
        agree = flip.predict(images) == crops.predict(images)
        assert agree.any() and not agree.all()
        logits = routed.logits(images)
        assert list(routed.classified_by_branch) == [agree.sum(), (~agree).sum()]  # what nips-defense -v reports
        mean = (np.exp(flip.logits(images).astype(np.float64)) + np.exp(crops.logits(images).astype(np.float64))) / 2
        np.testing.assert_allclose(logits[agree], np.log(mean[agree]), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits[~agree], last.logits(images[~agree]), rtol=1e-5, atol=1e-5)
        gradient = routed.gradient_function(loss)(images, labels)
        both = (flip.gradient_function(loss)(images[agree], labels[agree]) + crops.gradient_function(loss)(images[agree], labels[agree])) / 2
        np.testing.assert_allclose(gradient[agree], both, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gradient[~agree], last.gradient_function(loss)(images[~agree], labels[~agree]), rtol=1e-5)


def test_the_defense_job_says_how_many_images_each_branch_classified(tmp_path: Path, toy_networks, caplog) -> None:
    """nips-defense's info line: the consensus branch's count is the images whose two recipes agree."""
    import logging

    from attack_fakes import write_inputs

    from nips_adv.defenses.directory import classify_directory

    clean = write_inputs(tmp_path / "in", 12)
    images = np.stack([clean[name] for name in sorted(clean)])
    with Classifier(toy_networks) as classifier:
        flip, crops = (DefendedClassifier(classifier, parse_recipe(text)) for text in ("flip", "crops"))
        agreeing = int((flip.predict(images) == crops.predict(images)).sum())
        model = DefendedClassifier(classifier, parse_recipe("flip|crops,from:1000,bits:3"))
        with caplog.at_level(logging.INFO, logger="nips_adv"):
            classify_directory(tmp_path / "in", tmp_path / "out.csv", model=model, batch_size=5, progress=False)
    assert 0 < agreeing < 12 and f"routed recipe: images classified by each branch, in order: {agreeing}, {12 - agreeing}" in caplog.text


def test_the_defended_logits_are_the_log_mean_probability_of_the_views(toy_networks, pixels) -> None:
    """flip: two views, the image and its mirror; the defense averages their probabilities."""
    with Classifier(toy_networks) as classifier:
        defended = DefendedClassifier(classifier, parse_recipe("flip"))
        expected = 0.5 * _softmax(classifier.logits(pixels)) + 0.5 * _softmax(classifier.logits(pixels[:, :, ::-1]))
        np.testing.assert_allclose(np.exp(defended.logits(pixels)), expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(defended.predict(pixels), np.argmax(expected, axis=1) + 1)
        plain = DefendedClassifier(classifier, parse_recipe("plain"))
        np.testing.assert_array_equal(plain.predict(pixels), classifier.predict(pixels))


def _toy_log_softmax(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    logits = (np.asarray(pixels, np.float64) / 255.0).reshape(len(pixels), -1) @ matrix
    return np.log(_softmax(logits))


def test_versus_plain_divides_the_views_probability_by_the_plain_one_where_they_disagree(toy_networks) -> None:
    """versus-plain behind one view, the mirror image: log softmax(log p_view - A log p_plain) where the plain top
    class is not among the view's three most likely, the view's log-probability where it is (a mirror-symmetric
    image; one whose plain top class is the view's third). Its adaptive gradient is the loss's on the view's
    logits minus A x the plain log-probabilities (where they disagree), through both (central differences)."""
    from nips_adv.defenses.recipes import Recipe
    from nips_adv.models.tf_compat import tf

    power, labels = 0.7, np.array([3, 4, 5, 6, 7])
    half = np.random.default_rng(5).integers(0, 256, size=(1, SIDE, SIDE // 2, 3))
    symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)
    pixels = np.concatenate([symmetric, np.random.default_rng(13).integers(0, 256, size=(4, SIDE, SIDE, 3))]).astype(np.uint8)
    recipe = Recipe("mirror+versus-plain", WithOriginal(HorizontalFlip(with_original=False)), False, versus_plain=power)
    with Classifier(toy_networks) as classifier:
        matrix = _toy_matrix().astype(np.float64)
        defended = DefendedClassifier(classifier, recipe)
        plain = _toy_log_softmax(pixels, matrix)
        views = _toy_log_softmax(pixels[:, :, ::-1], matrix)
        rank = (views > views[np.arange(len(views)), np.argmax(plain, axis=1)][:, None]).sum(axis=1)
        agree = rank < 3
        assert list(rank) == [0, 3, 13, 2, 15]

        expected = np.where(agree[:, None], views, views - power * plain)
        expected -= np.log(np.exp(expected).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(defended.logits(pixels), expected, rtol=1e-4, atol=1e-4)

        def loss(logits, labels, weights):
            return tf.reduce_sum(tf.nn.log_softmax(logits)[:, 7] * tf.cast(weights[:, 0], tf.float32))

        def numpy_loss(x: np.ndarray) -> float:
            base = np.where(agree[:, None], 0.0, _toy_log_softmax(x, matrix))  # no flips within +-0.5 pixel
            total = 0.0
            for view in (x[:, :, ::-1],):
                logits = (view / 255.0).reshape(len(x), -1) @ matrix - power * base
                total += float((logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))[:, 7].sum())
            return total

        gradient = defended.gradient_function(loss)(pixels, labels)
        x = pixels.astype(np.float64)
        numeric = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            step = np.zeros_like(x)
            step[index] = 0.5
            numeric[index] = (numpy_loss(x + step) - numpy_loss(x - step)) / 1.0
        np.testing.assert_allclose(gradient, numeric, rtol=2e-2, atol=2e-3 * np.abs(numeric).max())
        # With an attack transform in front, the plain term sees the transformed image too.
        mirrored = defended.gradient_function(loss, HorizontalFlip(with_original=False))(pixels, labels)
        np.testing.assert_allclose(mirrored, defended.gradient_function(loss)(pixels[:, :, ::-1], labels)[:, :, ::-1], rtol=1e-4, atol=1e-6)


def test_random_recipes_are_deterministic_under_a_seed(toy_networks, pixels) -> None:
    def run(seed: int) -> list[np.ndarray]:
        with Classifier(toy_networks, seed=seed) as classifier:
            defended = DefendedClassifier(classifier, parse_recipe("resize-pad", seed=seed), passes=2)
            return [defended.logits(pixels) for _ in range(2)]

    first, again, other = run(5), run(5), run(6)
    for one, two in zip(first, again):
        np.testing.assert_array_equal(one, two)
    assert not np.allclose(first[0], first[1])  # each call draws afresh
    assert not np.allclose(first[0], other[0])


def test_more_passes_average_more_random_views(toy_networks, pixels) -> None:
    """Passes are separate draws: with the same seed, 3 passes average the first pass's views and two more."""
    recipe = parse_recipe("resize-pad:2", seed=1)
    with Classifier(toy_networks, seed=1) as classifier:
        views = classifier.logits_function(recipe.transform)
        drawn = np.concatenate([views(pixels) for _ in range(3)])  # (6, B, 1000)
    with Classifier(toy_networks, seed=1) as classifier:
        defended = DefendedClassifier(classifier, recipe, passes=3)
        averaged = defended.logits(pixels)
    np.testing.assert_allclose(np.exp(averaged), _softmax(drawn).mean(axis=0), rtol=1e-4, atol=1e-6)


def test_the_adaptive_gradient_is_the_eot_average_through_the_attack_and_the_defense(toy_networks, pixels) -> None:
    def loss(logits, labels, weights):
        from nips_adv.models.tf_compat import tf

        return tf.reduce_sum(logits[:, 5])

    recipe = parse_recipe("jpeg+resize-pad", seed=2)
    labels = np.ones(len(pixels), np.int64)
    with Classifier(toy_networks, seed=2) as classifier:
        single = classifier.gradient_function(loss, recipe.transform)
        per_pass = [single(pixels, labels) for _ in range(3)]
    with Classifier(toy_networks, seed=2) as classifier:
        averaged = DefendedClassifier(classifier, recipe, gradient_passes=3).gradient_function(loss)(pixels, labels)
    assert np.abs(averaged).sum() > 0  # BPDA: JPEG passes the gradient on
    np.testing.assert_allclose(averaged, np.mean(per_pass, axis=0), rtol=1e-4, atol=1e-5)


# --- nips-defense ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("defense_inputs")
    rng = np.random.default_rng(11)
    for index in range(3):
        write_png(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8), folder / f"{index}.png")
    return folder


def _rows(path: Path) -> dict[str, int]:
    return {name: int(label) for name, label in (line.split(",") for line in path.read_text().splitlines())}


@pytest.mark.slow
def test_plain_equals_the_classifier_argmax(inception_v3_checkpoint: Path, input_dir: Path, tmp_path: Path) -> None:
    from nips_adv.contract.images import read_png

    output = tmp_path / "out.csv"
    result = CliRunner().invoke(
        defense_command,
        [str(input_dir), str(output), "--plain", "-q", "--model", "inception_v3", "--checkpoint", str(inception_v3_checkpoint)],
    )
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in input_dir.glob("*.png"))
    with Classifier.create("inception_v3", inception_v3_checkpoint) as classifier:
        expected = classifier.predict(np.stack([read_png(input_dir / name) for name in names]))
    assert _rows(output) == dict(zip(names, expected.tolist()))


def _write_truncated(path: Path) -> Path:
    data = PACKAGED_DENOISER.read_bytes() if PACKAGED_DENOISER.is_file() else b"PK\x03\x04" + bytes(200)
    path.write_bytes(data[: len(data) // 2])
    return path


def _write_other_architecture(path: Path) -> Path:
    np.savez(path, __architecture__=np.array("unet-99"), __version__=np.array(1))
    return path


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["--recipe", "sharpen"], "sharpen"),
        (["--recipe", "jpeg:101"], "jpeg:101"),
        (["--recipe", "denoiser:{missing}"], "missing.npz"),
        (["--recipe", "denoiser:{truncated}"], "truncated.npz"),
        (["--recipe", "denoiser:{other}"], "other.npz"),
        (["--plain", "--recipe", "jpeg"], "--plain"),
        (["--recipe", "plain,from:3,blur"], "blur"),
        (["--recipe", "plain,from:8,denoiser,from:3,flip"], "levels must increase"),
        (["--recipe", "plain,from:8,versus-plain+flip"], "versus-plain must be the last step"),
    ],
)
def test_bad_recipes_and_weights_exit_2_with_one_line_and_write_nothing(
    arguments: list[str], named: str, input_dir: Path, tmp_path: Path
) -> None:
    files = {
        "missing": tmp_path / "missing.npz",
        "truncated": _write_truncated(tmp_path / "truncated.npz"),
        "other": _write_other_architecture(tmp_path / "other.npz"),
    }
    arguments = [argument.format(**files) for argument in arguments]
    output = tmp_path / "out.csv"
    result = CliRunner().invoke(defense_command, [str(input_dir), str(output), "-q", *arguments])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.output
    assert not output.exists()


def test_a_bad_denoiser_file_raises_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(DenoiserWeightsError):
        parse_recipe(f"denoiser:{_write_truncated(tmp_path / 'cut.npz')}")
    with pytest.raises(DenoiserWeightsError, match="missing.npz"):  # the second of two files
        parse_recipe(f"denoiser:{PACKAGED_DENOISER}:{tmp_path / 'missing.npz'}")


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", ["bits:5+resize-pad:2", "plain,from:3,bits:5+resize-pad:2+versus-plain"])
def test_a_recipe_runs_through_the_tool_and_verbose_names_it_and_its_seed(
    recipe: str, inception_v3_checkpoint: Path, input_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    arguments = [str(input_dir), str(output), "--recipe", recipe, "--passes", "1", "--seed", "3", "-v",
                 "--model", "inception_v3", "--checkpoint", str(inception_v3_checkpoint)]
    result = CliRunner().invoke(defense_command, arguments)
    assert result.exit_code == 0, result.output
    assert f"recipe {recipe}, seed 3" in result.output
    rows = _rows(output)
    assert sorted(rows) == sorted(path.name for path in input_dir.glob("*.png"))
    assert all(1 <= label <= 1000 for label in rows.values())


def test_the_packaged_denoiser_loads_and_keeps_clean_photos_correct() -> None:
    """EfficientNet-Lite1 behind the packaged denoiser still sees scikit-image's cat and espresso."""
    import skimage.data

    recipe = parse_recipe("denoiser")
    assert recipe.transform is not None and recipe.transform.paths == [PACKAGED_DENOISER]
    photos = np.stack([skimage.data.chelsea()[:299, 76:375], skimage.data.coffee()[:299, 150:449]])
    with Classifier.create("efficientnet_lite1") as classifier:
        denoised = classifier.logits_function(recipe.transform)(photos)[0]
        plain = classifier.logits(photos)
    domestic_cats, espresso = {282, 283, 284, 285, 286}, 968
    labels = np.argmax(denoised, axis=1) + 1
    assert labels[0] in domestic_cats and labels[1] == espresso
    np.testing.assert_array_equal(labels, np.argmax(plain, axis=1) + 1)


@pytest.mark.slow
def test_the_default_recipe_routes_photos_by_their_noise_and_keeps_them_correct() -> None:
    """The default: photographs showing no noise go through the consensus of five crops and the denoiser,
    and the same photographs under +-16 drawn per channel go to the noise, denoiser and crops branch that
    also divides out the undefended beliefs; both still see scikit-image's cat and espresso."""
    import skimage.data

    from nips_adv.defenses.noise_level import colour_noise_level
    from nips_adv.defenses.recipes import DEFAULT_RECIPE

    recipe = parse_recipe(DEFAULT_RECIPE, seed=0)
    assert [branch.text for branch in recipe.branches] == ["crops|denoiser+crops", "noise:12+denoiser+crops+versus-plain:0.5"]
    assert recipe.levels == (8.0,)
    crops, denoised = recipe.branches[0].consensus
    assert crops.text == "crops" and denoised.transform is not None and denoised.transform.copies == 5
    noise_branch = recipe.branches[1]
    assert isinstance(noise_branch.transform, WithOriginal) and noise_branch.transform.copies == 11 and recipe.random
    assert noise_branch.versus_plain == 0.5 and not crops.versus_plain and not denoised.versus_plain
    photos = np.stack([skimage.data.chelsea()[:299, 76:375], skimage.data.coffee()[:299, 150:449]])
    noisy = np.clip(photos + 16 * np.random.default_rng(1).choice([-1, 1], size=photos.shape), 0, 255).astype(np.uint8)
    assert list(recipe.branch_of(colour_noise_level(photos))) == [0, 0]
    assert list(recipe.branch_of(colour_noise_level(noisy))) == [1, 1]
    with Classifier.create("efficientnet_lite1", seed=0) as classifier:
        defended = DefendedClassifier(classifier, recipe, passes=2)
        consensus = DefendedClassifier(classifier, parse_recipe("crops|denoiser+crops", seed=0))
        logits, agree = consensus.consensus_logits(photos)
        assert agree.all()  # both photographs stay on the consensus branch
        np.testing.assert_allclose(defended.logits(photos), logits, rtol=1e-5, atol=1e-5)
        labels = defended.predict(np.concatenate([photos, noisy]))
    domestic_cats, espresso = {282, 283, 284, 285, 286}, 968
    assert labels[0] in domestic_cats and labels[2] in domestic_cats and labels[1] == espresso and labels[3] == espresso


class _CountingDefense:
    """Each image-pass costs ``seconds`` on a fake clock; asks ``stop`` before every pass after the first,
    as DefendedClassifier does; ``classifier`` (the undefended network) costs ``seconds`` per image."""

    def __init__(self, clock, passes: int, seconds: float = 1.0) -> None:
        self.clock, self.passes, self.seconds, self.used = clock, passes, seconds, []
        defense = self

        class Undefended:
            def predict(self, pixels: np.ndarray) -> np.ndarray:
                defense.clock.now += defense.seconds * len(pixels)
                defense.used.append("undefended")
                return np.full(len(pixels), 9)

        self.classifier = Undefended()

    def predict(self, pixels: np.ndarray, passes: int, stop=None) -> np.ndarray:
        done = 0
        for done in range(1, passes + 1):
            if done > 1 and stop is not None and stop():
                done -= 1
                break
            self.clock.now += self.seconds * len(pixels)
        self.used.append(done)
        return np.full(len(pixels), 7)


def test_the_time_budget_lowers_the_random_passes_after_the_first_batch(tmp_path: Path) -> None:
    """Each image-pass costs 1 s on a fake clock; 10 images, 4 passes configured, 30 s in all."""
    from attack_fakes import FakeClock, write_inputs

    from nips_adv.defenses.directory import classify_directory
    from nips_adv.jobs.time_budget import TimeBudget

    write_inputs(tmp_path / "in", 10)
    clock = FakeClock()
    model = _CountingDefense(clock, passes=4)
    budget = TimeBudget.starting_now(30.0, clock=clock)
    report = classify_directory(tmp_path / "in", tmp_path / "out.csv", model=model, batch_size=2, progress=False, time_budget=budget)
    assert model.used[0] == 4 and all(passes < 4 for passes in model.used[1:])
    assert clock.now - 1000.0 <= 30.0 + 1e-9  # 8 s for the first batch, then 22 s for 8 images: 2 passes each
    assert len(_rows(tmp_path / "out.csv")) == 10 and any("random passes" in warning for warning in report.warnings)


def test_the_time_budget_binds_inside_a_batch_and_every_image_gets_a_row(tmp_path: Path) -> None:
    """100000 passes on one batch stop at the deadline; a batch that starts after it gets the network alone."""
    from attack_fakes import FakeClock, write_inputs

    from nips_adv.defenses.directory import classify_directory
    from nips_adv.jobs.time_budget import TimeBudget

    write_inputs(tmp_path / "in", 4)
    clock = FakeClock()
    model = _CountingDefense(clock, passes=100_000, seconds=0.5)
    budget = TimeBudget.starting_now(10.0, clock=clock)
    report = classify_directory(tmp_path / "in", tmp_path / "out.csv", model=model, batch_size=2, progress=False, time_budget=budget)
    assert model.used == [10, "undefended"]  # 10 passes of 1 s reach the deadline; the second batch comes late
    assert clock.now - 1000.0 <= 10.0 + 1.0  # the deadline plus the cheapest pass of the late batch
    assert sorted(_rows(tmp_path / "out.csv").values()) == [7, 7, 9, 9]
    assert report.warnings[-1] == "time budget: the deadline passed before the last 2 images; the undefended network alone classified them"


def _toy_training_images(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random SIDE x SIDE clean images and adversarial ones 16 pixels off (clipped), under ``seed``."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 256, size=(count, SIDE, SIDE, 3)).astype(np.uint8)
    return clean, np.clip(clean.astype(int) + rng.choice([-16, 16], size=clean.shape), 0, 255).astype(np.uint8)


def _train_then_restart(toy_networks, tmp_path: Path, *, seed: int, **restart) -> tuple:
    """3 steps of training on toy images in ``tmp_path/first``, then a new run in ``tmp_path/second`` that starts
    from those weights with a learning rate of 0 (``restart``: more ``train_denoiser`` options); returns the
    training data and both runs' weights, read back."""
    from nips_adv.defenses.denoiser import read_denoiser_weights
    from nips_adv.defenses.training import TrainingSet, train_denoiser

    clean, adversarial = _toy_training_images(seed=seed, count=4)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with Classifier(toy_networks) as classifier:
        data = TrainingSet(clean, adversarial, np.arange(4), classifier.logits(clean))
        train_denoiser(classifier, data, None, first / "w.npz", work_dir=first, steps=3, batch_size=2,
                       learning_rate=1e-2, seed=0, progress=False)
    with Classifier(toy_networks) as classifier:
        train_denoiser(classifier, data, None, second / "w.npz", work_dir=second, steps=1, batch_size=2,
                       learning_rate=0.0, seed=0, progress=False, initial_weights=first / "w.npz", **restart)
    return data, read_denoiser_weights(first / "w.npz"), read_denoiser_weights(second / "w.npz")


@pytest.mark.slow
@pytest.mark.parametrize("flip", [False, True], ids=["plain", "mirrored-batches"])
def test_denoiser_training_resumes_exactly_from_its_checkpoint(toy_networks, tmp_path: Path, flip: bool) -> None:
    """4 steps in one run equal 2 steps, a new process (a new classifier), then 2 more from the checkpoint
    (with mirrored batches too: which images are mirrored follows the step, not the process)."""
    from nips_adv.defenses.denoiser import read_denoiser_weights
    from nips_adv.defenses.training import TrainingSet, train_denoiser

    clean, adversarial = _toy_training_images(seed=5, count=6)

    def run(work: Path, steps: int) -> dict:
        with Classifier(toy_networks) as classifier:
            targets = classifier.logits(clean)
            flipped = classifier.logits(np.ascontiguousarray(clean[:, :, ::-1])) if flip else None
            data = TrainingSet(clean, adversarial, np.arange(6), targets, flipped)
            figures = train_denoiser(classifier, data, data, work / "weights.npz", work_dir=work, steps=steps,
                                     batch_size=2, checkpoint_every=2, seed=1, progress=False)
        return figures

    (tmp_path / "once").mkdir()
    (tmp_path / "twice").mkdir()
    whole = run(tmp_path / "once", 4)
    run(tmp_path / "twice", 2)
    resumed = run(tmp_path / "twice", 4)
    assert whole["step"] == resumed["step"] == 4
    assert resumed["validation_loss"] == pytest.approx(whole["validation_loss"], rel=1e-5)
    with np.load(tmp_path / "once" / "checkpoint.npz") as one, np.load(tmp_path / "twice" / "checkpoint.npz") as two:
        assert sorted(one.files) == sorted(two.files) and any("Adam" in name for name in one.files)
        for name in one.files:
            np.testing.assert_allclose(one[name], two[name], rtol=1e-5, atol=1e-7)
    read_denoiser_weights(tmp_path / "twice" / "weights.npz")


def test_mirrored_batches_pair_each_mirrored_image_with_its_mirrored_target(toy_networks, tmp_path: Path) -> None:
    """The untrained denoiser is the identity and a learning rate of 0 keeps it so: on clean inputs the loss is 0
    exactly when every mirrored image meets its mirrored clean logits; given the unmirrored logits as the
    mirrored targets instead, the loss shows that some images were mirrored."""
    from nips_adv.defenses.training import TrainingSet, train_denoiser

    clean = np.random.default_rng(8).integers(0, 256, size=(6, SIDE, SIDE, 3)).astype(np.uint8)
    losses = {}
    for case in ("mirrored targets", "unmirrored targets"):
        work = tmp_path / case.replace(" ", "-")
        work.mkdir()
        with Classifier(toy_networks) as classifier:
            targets = classifier.logits(clean)
            mirrored = classifier.logits(np.ascontiguousarray(clean[:, :, ::-1]))
            data = TrainingSet(clean, clean, np.arange(6), targets, mirrored if case == "mirrored targets" else targets)
            figures = train_denoiser(classifier, data, None, work / "w.npz", work_dir=work, steps=6, batch_size=3,
                                     learning_rate=0.0, checkpoint_every=6, seed=2, progress=False)
        losses[case] = figures["train_loss"]
    assert losses["mirrored targets"] == pytest.approx(0.0, abs=1e-3)
    assert losses["unmirrored targets"] > 0.1


def test_training_can_start_from_given_denoiser_weights(toy_networks, tmp_path: Path) -> None:
    """--init: with a learning rate of 0 the weights written are exactly the ones it started from."""
    _, started, kept = _train_then_restart(toy_networks, tmp_path, seed=6)
    assert any(np.any(value != 0) for name, value in started.items() if "bias" in name)  # it did train away from the identity
    for name, value in started.items():
        np.testing.assert_array_equal(kept[name], value, err_msg=name)


def test_train_denoiser_refuses_a_bad_init_file_in_one_line_and_writes_nothing(input_dir: Path, tmp_path: Path) -> None:
    from nips_adv.cli.train_denoiser import train_denoiser_command

    output = tmp_path / "w.npz"
    result = CliRunner().invoke(train_denoiser_command, [str(output), "--images", str(input_dir), "--init",
                                                         str(_write_truncated(tmp_path / "truncated.npz")), "-q"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "truncated.npz" in lines[0] and "Traceback" not in result.output
    assert not output.exists() and not (tmp_path / "w.npz.work").exists()


@pytest.mark.parametrize("option", [("--extra-round", "bsr:colours=3"), ("--methods", "mi-fgsm,nope")])
def test_train_denoiser_refuses_a_bad_attack_method_in_one_line_and_writes_nothing(
    input_dir: Path, tmp_path: Path, option: tuple[str, str]
) -> None:
    from nips_adv.cli.train_denoiser import train_denoiser_command

    output = tmp_path / "w.npz"
    result = CliRunner().invoke(train_denoiser_command, [str(output), "--images", str(input_dir), *option, "-q"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and ("colours" in lines[0] or "nope" in lines[0]) and "Traceback" not in result.output
    assert not output.exists() and not (tmp_path / "w.npz.work").exists()


def test_keep_last_writes_the_final_checkpoints_weights_even_when_resumed(toy_networks, tmp_path: Path) -> None:
    """--keep last: OUTPUT is the final checkpoint's denoiser, also for a finished run resumed to write it."""
    from nips_adv.defenses.denoiser import read_denoiser_weights
    from nips_adv.defenses.training import TrainingSet, train_denoiser

    clean, adversarial = _toy_training_images(seed=9, count=4)
    def run(output: Path, steps: int, keep: str) -> None:
        with Classifier(toy_networks) as classifier:
            targets = classifier.logits(clean)
            data = TrainingSet(clean, adversarial, np.arange(4), targets)
            train_denoiser(classifier, data, data, output, work_dir=tmp_path, steps=steps, batch_size=2,
                           learning_rate=1e-2, checkpoint_every=1, seed=0, progress=False, keep=keep)

    run(tmp_path / "first.npz", 4, "last")
    # The finished run resumed with --keep last: a new OUTPUT gets the checkpoint's weights (nothing retrained).
    run(tmp_path / "again.npz", 4, "last")
    with np.load(tmp_path / "checkpoint.npz") as checkpoint:
        for output in ("first.npz", "again.npz"):
            for name, value in read_denoiser_weights(tmp_path / output).items():
                np.testing.assert_array_equal(checkpoint[f"denoiser/{name}"], value, err_msg=f"{output} {name}")


def test_training_grows_three_levels_into_four_and_refuses_a_checkpoint_of_another_architecture(
    toy_networks, tmp_path: Path
) -> None:
    """--init three-level weights with --architecture four levels: the same function at first (learning rate 0:
    the shared parameters come back unchanged, the new last layer zero); then resuming that work folder as a
    three-level denoiser is refused in one line naming the checkpoint."""
    from nips_adv.defenses.denoiser import DenoiserWeightsError
    from nips_adv.defenses.training import train_denoiser

    data, small, grown = _train_then_restart(toy_networks, tmp_path, seed=12, architecture="hgd-unet4-16-32-64-128")
    assert set(grown) - set(small) == {f"{layer}/{part}" for layer in ("encoder4/conv1", "encoder4/conv2",
                                       "decoder3/conv1", "decoder3/conv2") for part in ("kernel", "bias")}
    for name, value in small.items():
        np.testing.assert_array_equal(grown[name], value, err_msg=name)
    assert not grown["decoder3/conv2/kernel"].any() and grown["decoder3/conv1/kernel"].any()
    with Classifier(toy_networks) as classifier, pytest.raises(DenoiserWeightsError) as raised:
        train_denoiser(classifier, data, None, tmp_path / "second" / "again.npz", work_dir=tmp_path / "second", steps=2,
                       batch_size=2, seed=0, progress=False, architecture="hgd-unet3-16-32-64")
    message = str(raised.value)
    assert "checkpoint.npz" in message and "another denoiser" in message and "\n" not in message
    assert not (tmp_path / "second" / "again.npz").exists()


def test_train_denoiser_refuses_to_shrink_init_weights_in_one_line_and_writes_nothing(
    input_dir: Path, tmp_path: Path
) -> None:
    from nips_adv.cli.train_denoiser import train_denoiser_command
    from nips_adv.defenses.denoiser import build_denoiser, save_denoiser_weights
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        build_denoiser(tf1.placeholder(tf.float32, [None, None, None, 3]), architecture="hgd-unet4-16-32-64-128")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            save_denoiser_weights(session, tmp_path / "four.npz")
    output = tmp_path / "w.npz"
    result = CliRunner().invoke(train_denoiser_command, [str(output), "--images", str(input_dir), "--init",
                                                         str(tmp_path / "four.npz"), "--architecture",
                                                         "hgd-unet3-16-32-64", "-q"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "four.npz" in lines[0] and "do not fit" in lines[0] and "Traceback" not in result.output
    assert not output.exists() and not (tmp_path / "w.npz.work").exists()


def test_input_noise_reaches_every_training_input_and_replays_under_the_seed(toy_networks, tmp_path: Path) -> None:
    """The identity denoiser (learning rate 0) on clean inputs has loss 0; with --input-noise the inputs carry noise
    (loss > 0), the same noise in a second run with the same seed."""
    from nips_adv.defenses.training import TrainingSet, train_denoiser

    clean = np.random.default_rng(13).integers(0, 256, size=(4, SIDE, SIDE, 3)).astype(np.uint8)
    losses = []
    for run, noise in enumerate([0.0, 8.0, 8.0]):
        work = tmp_path / f"run{run}"
        work.mkdir()
        with Classifier(toy_networks) as classifier:
            data = TrainingSet(clean, clean, np.arange(4), classifier.logits(clean))
            figures = train_denoiser(classifier, data, None, work / "w.npz", work_dir=work, steps=4, batch_size=2,
                                     learning_rate=0.0, checkpoint_every=4, seed=3, progress=False, input_noise=noise)
        losses.append(figures["train_loss"])
    assert losses[0] == pytest.approx(0.0, abs=1e-4)
    assert losses[1] > 0.01 and losses[2] == pytest.approx(losses[1], rel=1e-6)
    with pytest.raises(ValueError, match="input noise"):
        train_denoiser(None, data, None, tmp_path / "x.npz", work_dir=tmp_path, steps=1, input_noise=-1.0)


def test_view_parameters_replay_under_the_seed_and_stay_inside_the_image() -> None:
    from nips_adv.defenses.training import ViewJitter, view_parameters

    jitter = ViewJitter(min_area=0.5, max_aspect=4 / 3, max_gain=0.15)
    drawn = view_parameters(400, [3, 1], jitter, side=299)
    np.testing.assert_array_equal(drawn, view_parameters(400, [3, 1], jitter, side=299))
    assert not np.array_equal(drawn, view_parameters(400, [3, 2], jitter, side=299))
    left, top, right, bottom, mirror, brightness, contrast = drawn.T
    assert np.all(left >= 0) and np.all(top >= 0) and np.all(right <= 299) and np.all(bottom <= 299)
    area = (right - left) * (bottom - top) / 299**2
    assert area.min() > 0.45 and area.max() <= 1.0 and area.min() < 0.6  # the range is used, up to rounding
    aspect = (right - left) / (bottom - top)
    assert 0.7 < aspect.min() < 0.8 and 1.25 < aspect.max() < 1.4
    assert set(np.unique(mirror)) == {0.0, 1.0}
    for gain in (brightness, contrast):
        assert 0.85 <= gain.min() < 0.87 and 1.13 < gain.max() <= 1.15


def test_a_view_is_a_pil_crop_resized_back_and_mirrored_then_gained_about_its_mean() -> None:
    from PIL import Image, ImageOps

    from nips_adv.defenses.training import apply_view

    image = np.random.default_rng(4).integers(0, 256, size=(40, 40, 3)).astype(np.uint8)
    reference = ImageOps.mirror(Image.fromarray(image).crop((5, 7, 35, 31)).resize((40, 40), Image.BICUBIC))
    np.testing.assert_array_equal(apply_view(image, np.array([5, 7, 35, 31, 1, 1.0, 1.0])), np.asarray(reference))
    unmirrored = np.asarray(Image.fromarray(image).crop((5, 7, 35, 31)).resize((40, 40), Image.BICUBIC), dtype=float)
    gained = apply_view(image, np.array([5, 7, 35, 31, 0, 1.1, 0.8]))
    expected = np.clip(np.round((unmirrored - unmirrored.mean()) * 0.8 + unmirrored.mean() * 1.1), 0, 255)
    np.testing.assert_array_equal(gained, expected.astype(np.uint8))
    flat = np.full((10, 10, 3), 100, np.uint8)
    assert np.all(apply_view(flat, np.array([0, 0, 10, 10, 0, 1.1, 0.5])) == 110)


def test_random_views_without_jitter_are_the_images_or_their_mirrors() -> None:
    from nips_adv.defenses.training import ViewJitter, random_views, view_parameters

    images = np.random.default_rng(9).integers(0, 256, size=(6, 12, 12, 3)).astype(np.uint8)
    still = ViewJitter(min_area=1.0, max_aspect=1.0, max_gain=0.0)
    views = random_views(images, 5, still)
    mirrored = view_parameters(6, 5, still, side=12)[:, 4].astype(bool)
    assert 0 < mirrored.sum() < 6
    np.testing.assert_array_equal(views[~mirrored], images[~mirrored])
    np.testing.assert_array_equal(views[mirrored], images[mirrored][:, :, ::-1])
    moved = random_views(images, 5)
    assert moved.shape == images.shape and moved.dtype == np.uint8 and not np.array_equal(moved, views)
    np.testing.assert_array_equal(moved, random_views(images, 5))


def test_view_rounds_join_the_clean_images_with_their_own_attacks_and_targets(
    input_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--view-rounds 2: each round's views (random_views under [seed, round]) follow the photos as clean
    images of their own; every adversarial image points at the clean image it was crafted from, and every
    clean image has its own target (and mirrored target). Attacks, logits and training are stood in for."""
    import contextlib

    import nips_adv.defenses.training as training
    from nips_adv.cli.train_denoiser import train_denoiser_command
    from nips_adv.models.classifier import Classifier as RealClassifier

    def craft(clean, *, surrogates, **_):  # an identifiable "attack": the photographic negative
        return np.concatenate([255 - clean] * len(surrogates)), np.tile(np.arange(len(clean)), len(surrogates))

    def logits(classifier, clean, cache, batch_size=16):  # identifiable "logits": each image's pixel sums
        return clean.reshape(len(clean), -1)[:, :1000].astype(np.float32).cumsum(axis=1)

    captured = {}
    monkeypatch.setattr(training, "craft_adversarial", craft)
    monkeypatch.setattr(training, "clean_logits", logits)
    monkeypatch.setattr(training, "train_denoiser", lambda classifier, train, validation, output, **_: captured.update(train=train) or {})
    monkeypatch.setattr(RealClassifier, "create", classmethod(lambda cls, *args, **kwargs: contextlib.nullcontext(object())))
    result = CliRunner().invoke(train_denoiser_command, [
        str(tmp_path / "w.npz"), "--images", str(input_dir), "--train-count", "2", "--no-skimage", "--view-rounds", "2",
        "--surrogates", "efficientnet_lite1,efficientnet_lite2", "--clean-repeats", "2", "--seed", "3", "-q"])
    assert result.exit_code == 0, result.output
    train = captured["train"]
    photos = training.load_images(training.split_dev_images(input_dir, 2)[0])
    expected_clean = np.concatenate([photos, training.random_views(photos, [3, 0]), training.random_views(photos, [3, 1])])
    np.testing.assert_array_equal(train.clean, expected_clean)
    # 3 rounds (1 drawn + 2 of views) x 2 surrogates x 2 images attacked, then the 6 clean images twice.
    assert len(train.adversarial) == 3 * 2 * 2 + 6 * 2
    crafted = slice(0, 12)
    np.testing.assert_array_equal(train.adversarial[crafted], 255 - expected_clean[train.source[crafted]])
    assert sorted(train.source[crafted]) == sorted([0, 1] * 2 + [2, 3] * 2 + [4, 5] * 2)
    np.testing.assert_array_equal(train.adversarial[12:], expected_clean[train.source[12:]])
    np.testing.assert_array_equal(train.targets, logits(None, expected_clean, None))
    np.testing.assert_array_equal(train.flipped_targets, logits(None, expected_clean[:, :, ::-1], None))


def test_adaptive_round_needs_the_init_denoiser_in_one_line_and_writes_nothing(input_dir: Path, tmp_path: Path) -> None:
    from nips_adv.cli.train_denoiser import train_denoiser_command

    output = tmp_path / "w.npz"
    result = CliRunner().invoke(train_denoiser_command, [str(output), "--images", str(input_dir), "--adaptive-round", "mi-fgsm", "-q"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--init" in lines[0] and "Traceback" not in result.output
    assert not output.exists() and not (tmp_path / "w.npz.work").exists()


def test_adaptive_rounds_are_crafted_through_the_init_denoiser_after_the_other_rounds(
    input_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--adaptive-round: one more round per spec, its surrogates behind the --init weights, its seed after
    the drawn and extra rounds'; the other rounds stay plain. Attacks, logits and training are stood in for."""
    import contextlib

    import nips_adv.defenses.training as training
    from nips_adv.cli.train_denoiser import train_denoiser_command
    from nips_adv.models.classifier import Classifier as RealClassifier

    calls = []

    def craft(clean, *, surrogates, methods, seed, through=None, **_):
        calls.append((list(methods), seed, through))
        return np.concatenate([clean] * len(surrogates)), np.tile(np.arange(len(clean)), len(surrogates))

    monkeypatch.setattr(training, "craft_adversarial", craft)
    monkeypatch.setattr(training, "clean_logits", lambda classifier, clean, cache, batch_size=16: np.zeros((len(clean), 1000), np.float32))
    monkeypatch.setattr(training, "train_denoiser", lambda *args, **kwargs: {})
    monkeypatch.setattr(RealClassifier, "create", classmethod(lambda cls, *args, **kwargs: contextlib.nullcontext(object())))
    weights = _copy_packaged_denoiser(tmp_path / "init.npz")
    result = CliRunner().invoke(train_denoiser_command, [
        str(tmp_path / "w.npz"), "--images", str(input_dir), "--train-count", "2", "--no-skimage", "--methods", "mi-fgsm",
        "--rounds", "2", "--extra-round", "bsr:copies=2", "--adaptive-round", "di-mi-fgsm", "--adaptive-round", "mi-fgsm",
        "--init", str(weights), "--seed", "3", "-q"])
    assert result.exit_code == 0, result.output
    train_calls = [call for call in calls if call[1] != 3 + 1]  # seed + 1: the validation images
    assert train_calls == [
        (["mi-fgsm"], 3, None), (["mi-fgsm"], 1003, None), (["bsr:copies=2"], 2003, None),
        (["di-mi-fgsm"], 3003, weights), (["mi-fgsm"], 4003, weights),
    ]


def test_craft_adversarial_through_a_denoiser_attacks_the_surrogate_behind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``through``: the attack is handed the surrogate behind those weights (a DefendedClassifier), and
    the cache is keyed by the weights' digest: other weights, or none, never reuse it."""
    import contextlib

    import nips_adv.attacks.sign_gradient as sign_gradient
    from nips_adv.defenses.recipes import DefendedClassifier
    from nips_adv.defenses.training import craft_adversarial

    surrogate = object()
    models = []

    def attack(model, clean, eps, **_):
        models.append(model)
        return clean

    monkeypatch.setattr(sign_gradient, "sign_gradient_attack", attack)
    monkeypatch.setattr(Classifier, "create", classmethod(lambda cls, *args, **kwargs: contextlib.nullcontext(surrogate)))
    clean = np.zeros((3, 8, 8, 3), np.uint8)
    weights = _copy_packaged_denoiser(tmp_path / "a.npz")
    arguments = dict(surrogates=["efficientnet_lite1"], methods=["mi-fgsm"], epsilons=[8.0], seed=0, cache=tmp_path / "train.npz", progress=False)
    craft_adversarial(clean, through=weights, **arguments)
    assert len(models) == 1 and isinstance(models[0], DefendedClassifier) and models[0].classifier is surrogate
    assert models[0].recipe.transform.paths == [weights] and not models[0].recipe.random
    craft_adversarial(clean, through=weights, **arguments)  # cached
    craft_adversarial(clean, **arguments)  # plain: its own cache
    assert len(models) == 2 and models[1] is surrogate
    other = _copy_packaged_denoiser(tmp_path / "b.npz", change=True)
    craft_adversarial(clean, through=other, **arguments)
    assert len(models) == 3 and models[2].recipe.transform.paths == [other]
    assert len(list(tmp_path.glob("train-efficientnet_lite1-*-through-*.npz"))) == 2


def _copy_packaged_denoiser(path: Path, *, change: bool = False) -> Path:
    """The packaged weights file copied to ``path`` (with ``change``: its noise layer's bias nudged)."""
    if not PACKAGED_DENOISER.is_file():
        pytest.skip("the packaged denoiser weights are not in this checkout")
    with np.load(PACKAGED_DENOISER) as stored:
        arrays = {key: stored[key] for key in stored.files}
    if change:
        arrays["noise/bias"] = arrays["noise/bias"] + np.float32(0.01)
    np.savez(path, **arrays)
    return path


def _stand_in_training(monkeypatch: pytest.MonkeyPatch, captured: dict) -> None:
    """Attacks, logits, the classifier and training stood in for: the CLI's own handling is what is tested."""
    import contextlib

    import nips_adv.defenses.training as training
    from nips_adv.models.classifier import Classifier as RealClassifier

    monkeypatch.setattr(training, "craft_adversarial", lambda clean, **_: (clean.copy(), np.arange(len(clean))))
    monkeypatch.setattr(training, "clean_logits", lambda classifier, clean, cache, batch_size=16: np.zeros((len(clean), 1000), np.float32))
    monkeypatch.setattr(training, "train_denoiser", lambda classifier, train, validation, output, **_: captured.update(train=train) or {})
    monkeypatch.setattr(RealClassifier, "create", classmethod(lambda cls, *args, **kwargs: contextlib.nullcontext(object())))


def test_train_denoiser_leaves_out_an_unreadable_image_with_a_warning_and_exit_1(
    input_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nips_adv.cli.train_denoiser import train_denoiser_command

    images = tmp_path / "images"
    shutil.copytree(input_dir, images)
    readable = len(list(images.glob("*.png")))
    (images / "000broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    captured: dict = {}
    _stand_in_training(monkeypatch, captured)
    result = CliRunner().invoke(
        train_denoiser_command, [str(tmp_path / "w.npz"), "--images", str(images), "--no-skimage", "--train-count", "100", "-q"]
    )
    assert result.exit_code == 1, result.output + result.stderr
    assert "Traceback" not in result.stderr and "000broken.png" in result.stderr.splitlines()[0]
    assert result.stderr.splitlines()[-1].endswith("1 unreadable image(s) left out (named above)")
    assert len(captured["train"].clean) == readable


def test_train_denoiser_with_no_readable_image_fails_in_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    from nips_adv.cli.train_denoiser import train_denoiser_command

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    result = CliRunner().invoke(train_denoiser_command, [str(tmp_path / "w.npz"), "--images", str(tmp_path / "images"), "--no-skimage", "-q"])
    assert result.exit_code == 2 and result.stderr.splitlines()[-1].endswith("none of the 1 training images could be read")
    assert not (tmp_path / "w.npz").exists() and not (tmp_path / "w.npz.work").exists()


def test_denoiser_files_of_any_name_come_one_option_each(tmp_path: Path) -> None:
    odd = tmp_path / "lgd v2+final,lite:1.npz"
    shutil.copyfile(PACKAGED_DENOISER, odd)
    recipe = parse_recipe("crops,from:3,denoiser+crops", denoisers=[odd, PACKAGED_DENOISER])
    assert recipe.branches[1].transform.transforms[0].paths == [odd, PACKAGED_DENOISER]
    assert parse_recipe("denoiser", denoisers=[odd]).transform.paths == [odd]
    _, inputs = tmp_path / "out.csv", tmp_path / "in"
    inputs.mkdir()
    write_png(np.zeros((8, 8, 3), np.uint8), inputs / "a.png")
    missing = tmp_path / "gone, really.npz"
    result = CliRunner().invoke(defense_command, [str(inputs), str(tmp_path / "out.csv"), "--denoiser", str(missing)])
    assert result.exit_code == 2 and result.stderr.strip() == f"nips-defense: error: {missing}: denoiser weights file not found"
    assert not (tmp_path / "out.csv").exists()


def test_views_are_split_to_bound_each_run_and_large_images_shrink_to_the_network_first(toy_networks, pixels, monkeypatch) -> None:
    import nips_adv.defenses.recipes as recipes
    from nips_adv.contract.images import resize_pixels

    with Classifier(toy_networks) as classifier:
        whole = DefendedClassifier(classifier, parse_recipe("flip")).logits(pixels)
        monkeypatch.setattr(recipes, "VIEWS_PER_RUN", 2)  # flip's two views: one image per run
        np.testing.assert_allclose(DefendedClassifier(classifier, parse_recipe("flip")).logits(pixels), whole, rtol=1e-5, atol=1e-6)
        big = np.random.default_rng(2).integers(0, 256, size=(2, 4 * SIDE, 3 * SIDE, 3)).astype(np.uint8)
        shrunk = np.stack([resize_pixels(image, (SIDE, SIDE)) for image in big])
        defended = DefendedClassifier(classifier, parse_recipe("flip"))
        np.testing.assert_allclose(defended.logits(big), defended.logits(shrunk), rtol=1e-5, atol=1e-6)
    with pytest.raises(RecipeError, match="makes 100 views of each image per pass; at most 2 go"):
        parse_recipe("resize-pad:100")


def test_the_step_registry_is_the_parser_the_docs_and_the_class_defaults() -> None:
    from nips_adv.defenses.recipes import PRESETS, STEPS, step_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "defenses.md").read_text()
    assert step_table() in docs
    assert parse_recipe("resize-pad").transform == RandomResizePad(seed=None) and RandomResizePad().copies == 2
    for name, step in STEPS.items():
        if name != "denoiser" or PACKAGED_DENOISER.is_file():
            assert parse_recipe(name).random == step.random
    assert parse_recipe("routed").name == PRESETS["routed"] == DEFAULT_RECIPE
    with pytest.raises(RecipeError, match="'flip:3': flip takes no argument"):
        parse_recipe("flip:3")
    with pytest.raises(RecipeError, match="'jpeg:high': 'high' is not an integer"):
        parse_recipe("jpeg:high")


def test_versus_plain_differentiates_the_function_that_classifies(toy_networks) -> None:
    """Two views (the image and its mirror) and versus-plain: the adaptive gradient of log p(class 8) is the
    central difference of DefendedClassifier.logits itself, the very function nips-defense classifies with."""
    from nips_adv.models.tf_compat import tf

    pixels = np.random.default_rng(21).integers(0, 256, size=(3, SIDE, SIDE, 3)).astype(np.float64)
    with Classifier(toy_networks) as classifier:
        defended = DefendedClassifier(classifier, parse_recipe("flip+versus-plain:0.7"))

        def loss(logits, labels, weights):
            return tf.reduce_sum(tf.nn.log_softmax(logits)[:, 7] * tf.cast(weights[:, 0], tf.float32))

        gradient = defended.gradient_function(loss)(pixels, np.array([1, 2, 3]))
        assert defended.gradient_function(loss) is not None and len(classifier._gradients) == 1  # compiled once
        numeric = np.zeros_like(pixels)
        for index in np.ndindex(pixels.shape):
            step = np.zeros_like(pixels)
            step[index] = 0.25
            numeric[index] = (defended.logits(pixels + step)[:, 7].sum() - defended.logits(pixels - step)[:, 7].sum()) / 0.5
        np.testing.assert_allclose(gradient, numeric, rtol=3e-2, atol=3e-3 * np.abs(numeric).max())
