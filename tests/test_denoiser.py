"""The HGD-style denoiser: structure, identity at start, LGD training on a toy, .npz weights and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nips_adv.defenses.denoiser import (
    ARCHITECTURE,
    ARCHITECTURES,
    PARAMETER_SHAPES,
    DenoiserTransform,
    DenoiserWeightsError,
    build_denoiser,
    build_denoiser_training,
    denoiser_variables,
    load_denoiser_weights,
    read_denoiser_weights,
    save_denoiser_weights,
)

TRAINING_STEPS = 40


def toy_classifier_logits(pixels):
    """A tiny random conv 'classifier' on 16x16 images: conv 3x3x8 stride 2, ReLU, dense 512 -> 10."""
    from nips_adv.models.tf_compat import tf, tf1

    with tf1.variable_scope("toy_classifier", reuse=tf1.AUTO_REUSE):
        normal = tf1.random_normal_initializer
        kernel = tf1.get_variable("kernel", [3, 3, 3, 8], initializer=normal(0, 0.5, seed=1), trainable=False)
        dense = tf1.get_variable("dense", [8 * 8 * 8, 10], initializer=normal(0, 0.2, seed=2), trainable=False)
        features = tf.nn.relu(tf.nn.conv2d(pixels / 127.5 - 1.0, kernel, strides=2, padding="SAME"))
        return tf.matmul(tf.reshape(features, [-1, 8 * 8 * 8]), dense)


def toy_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth 16x16 clean images and 'adversarial' copies carrying one fixed sign pattern at eps 16
    (a universal perturbation: learnable in a few dozen steps, so held-out images show what was
    learnt), float32 0..255."""
    pattern = 16 * np.random.default_rng(99).choice([-1.0, 1.0], size=(16, 16, 3))
    coarse = np.random.default_rng(seed).uniform(40, 215, size=(count, 4, 4, 3))
    clean = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.float32)
    return clean, np.clip(clean + pattern, 0, 255).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the denoiser for a few steps on the toy; returns losses, a saved weights file and outputs."""
    from nips_adv.models.tf_compat import tf, tf1

    held_clean, held_adversarial = toy_images(16, seed=1000)
    weights_file = tmp_path_factory.mktemp("denoiser") / "denoiser.npz"
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        training = build_denoiser_training(toy_classifier_logits, learning_rate=3e-3)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.variables_initializer(tf1.global_variables(scope="toy_classifier")))
            session.run(training.initializer)
            untrained_output = session.run(training.denoised, {training.adversarial: held_adversarial})
            before = training.loss(session, held_clean, held_adversarial)
            losses = [training.step(session, *toy_images(8, seed=step)) for step in range(TRAINING_STEPS)]
            after = training.loss(session, held_clean, held_adversarial)
            save_denoiser_weights(session, weights_file)
            trained_output = session.run(training.denoised, {training.adversarial: held_adversarial})
    return {
        "before": before,
        "after": after,
        "losses": losses,
        "file": weights_file,
        "inputs": held_adversarial,
        "untrained_output": untrained_output,
        "trained_output": trained_output,
    }


def test_parameters_are_few_and_named_by_the_table():
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        output = build_denoiser(tf1.placeholder(tf.float32, [None, None, None, 3]), "somewhere")
        build_denoiser(tf1.placeholder(tf.float32, [None, None, None, 3]), "somewhere")  # reused, not duplicated
        variables = denoiser_variables("somewhere")
        assert len(tf1.global_variables()) == len(PARAMETER_SHAPES)
    assert {name: tuple(v.shape) for name, v in variables.items()} == PARAMETER_SHAPES
    assert sum(int(np.prod(shape)) for shape in PARAMETER_SHAPES.values()) == 118_691
    assert output.shape.as_list() == [None, None, None, 3]


def test_untrained_denoiser_is_the_identity_at_any_size():
    from nips_adv.models.tf_compat import tf, tf1

    pixels = np.random.default_rng(0).uniform(0, 255, size=(1, 299, 299, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf1.placeholder(tf.float32, [None, None, None, 3])
        denoised = build_denoiser(placeholder)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            for image in (pixels, pixels[:, :17, :30]):  # odd sizes go down and back up to the same size
                output = session.run(denoised, {placeholder: image})
                np.testing.assert_allclose(output, image, atol=1e-4)


def test_lgd_training_steps_reduce_the_loss(trained):
    assert trained["losses"][0] > 0
    assert np.mean(trained["losses"][-5:]) < 0.8 * trained["losses"][0]  # each step on fresh images
    assert trained["after"] < 0.75 * trained["before"]  # and on held-out ones
    np.testing.assert_allclose(trained["untrained_output"], trained["inputs"], atol=1e-4)
    assert np.abs(trained["trained_output"] - trained["inputs"]).mean() > 0.5  # it learnt to change images


def test_save_then_load_round_trips_exactly(trained):
    from nips_adv.models.tf_compat import tf, tf1

    weights = read_denoiser_weights(trained["file"])
    assert set(weights) == set(PARAMETER_SHAPES)
    assert not np.all(weights["noise/kernel"] == 0)  # trained, not the initial zeros
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf1.placeholder(tf.float32, [None, None, None, 3])
        denoised = build_denoiser(placeholder, "restored")
        with tf1.Session(graph=graph) as session:
            load_denoiser_weights(session, trained["file"], "restored")
            values = session.run(denoiser_variables("restored"))
            output = session.run(denoised, {placeholder: trained["inputs"]})
    for name, value in values.items():
        np.testing.assert_array_equal(value, weights[name])
    np.testing.assert_array_equal(output, trained["trained_output"])


def test_transform_bakes_the_weights_into_the_graph(trained):
    from nips_adv.models.tf_compat import tf, tf1

    transform = DenoiserTransform(trained["file"])
    assert transform.copies == 1 and transform.name == "denoiser(denoiser.npz)"
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf1.placeholder(tf.float32, [None, None, None, 3])
        denoised = transform(placeholder)
        assert tf1.global_variables() == []
        with tf1.Session(graph=graph) as session:
            output = session.run(denoised, {placeholder: trained["inputs"]})
    np.testing.assert_allclose(output, trained["trained_output"], atol=1e-3)


def _write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_weights_files_raise_one_line_naming_the_file(trained, tmp_path):
    good = read_denoiser_weights(trained["file"])
    tagged = {"__architecture__": np.array(ARCHITECTURE), "__version__": np.array(1)}
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(trained["file"].read_bytes()[:5000])
    not_numpy = tmp_path / "notes.npz"
    not_numpy.write_text("these are not weights\n")
    plain_array = tmp_path / "array.npz"
    with open(plain_array, "wb") as stream:
        np.save(stream, np.zeros(3))
    cases = {
        tmp_path / "missing.npz": "not found",
        truncated: "truncated or corrupt",
        not_numpy: "truncated or corrupt",
        plain_array: ".npz archive expected",
        _write_npz(tmp_path / "other.npz", {**good, "__architecture__": np.array("resnet"), "__version__": np.array(1)}): "'resnet'",
        _write_npz(tmp_path / "untagged.npz", dict(good)): "'none'",
        _write_npz(tmp_path / "future.npz", {**good, **tagged, "__version__": np.array(2)}): "version 2",
        _write_npz(tmp_path / "short.npz", {**{k: v for k, v in good.items() if k != "noise/bias"}, **tagged}): "noise/bias missing",
        _write_npz(tmp_path / "wide.npz", {**good, **tagged, "noise/kernel": np.zeros((3, 3, 32, 3))}): "noise/kernel",
        _write_npz(tmp_path / "nan.npz", {**good, **tagged, "noise/bias": np.full(3, np.nan)}): "non-finite",
    }
    for path, reason in cases.items():
        with pytest.raises(DenoiserWeightsError) as raised:
            DenoiserTransform(path)
        message = str(raised.value)
        assert str(path) in message and reason in message and "\n" not in message, message


def test_the_four_level_denoiser_adds_a_context_branch_and_starts_as_the_identity():
    from nips_adv.models.tf_compat import tf, tf1

    four = ARCHITECTURES["hgd-unet4-16-32-64-128"].parameter_shapes
    assert set(PARAMETER_SHAPES) < set(four) and all(four[name] == shape for name, shape in PARAMETER_SHAPES.items())
    assert sum(int(np.prod(shape)) for shape in four.values()) == 118_691 + 369_024  # 1.9 MB in float32
    pixels = np.random.default_rng(1).uniform(0, 255, size=(1, 37, 45, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf1.placeholder(tf.float32, [None, None, None, 3])
        denoised = build_denoiser(placeholder, architecture="hgd-unet4-16-32-64-128")
        assert set(denoiser_variables()) == set(four)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            np.testing.assert_allclose(session.run(denoised, {placeholder: pixels}), pixels, atol=1e-4)


def test_three_level_weights_grow_into_four_levels_as_the_same_function(trained, tmp_path):
    """--init with a three-level file into a four-level denoiser: the same outputs before any step; saved, the
    file says four levels; the other way round is refused, naming the file."""
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf1.placeholder(tf.float32, [None, None, None, 3])
        denoised = build_denoiser(placeholder, "grown", architecture="hgd-unet4-16-32-64-128")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            load_denoiser_weights(session, trained["file"], "grown")
            output = session.run(denoised, {placeholder: trained["inputs"]})
            save_denoiser_weights(session, tmp_path / "grown.npz", "grown")
    np.testing.assert_allclose(output, trained["trained_output"], atol=1e-3)
    grown = read_denoiser_weights(tmp_path / "grown.npz")
    assert set(grown) == set(ARCHITECTURES["hgd-unet4-16-32-64-128"].parameter_shapes)
    with np.load(tmp_path / "grown.npz") as stored:
        assert str(stored["__architecture__"]) == "hgd-unet4-16-32-64-128"
    assert DenoiserTransform(tmp_path / "grown.npz").name == "denoiser(grown.npz)"
    graph = tf.Graph()
    with graph.as_default():
        build_denoiser(tf1.placeholder(tf.float32, [None, None, None, 3]), "small")
        with tf1.Session(graph=graph) as session, pytest.raises(DenoiserWeightsError) as raised:
            load_denoiser_weights(session, tmp_path / "grown.npz", "small")
    assert "grown.npz" in str(raised.value) and "do not fit" in str(raised.value)


def test_several_weights_files_give_one_view_each_in_order(trained, tmp_path):
    """``denoiser:a.npz:b.npz``: copy-major views, the first file's denoising then the second's (here the
    identity: an untrained four-level denoiser), so the defense averages what the denoisers' outputs say."""
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        build_denoiser(tf1.placeholder(tf.float32, [None, None, None, 3]), "fresh", architecture="hgd-unet4-16-32-64-128")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            save_denoiser_weights(session, tmp_path / "identity.npz", "fresh")
    transform = DenoiserTransform([trained["file"], tmp_path / "identity.npz"])
    assert transform.copies == 2 and transform.name == "denoiser(denoiser.npz,identity.npz)"
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf1.placeholder(tf.float32, [None, None, None, 3])
        views = transform(placeholder)
        with tf1.Session(graph=graph) as session:
            output = session.run(views, {placeholder: trained["inputs"]})
    count = len(trained["inputs"])
    np.testing.assert_allclose(output[:count], trained["trained_output"], atol=1e-3)
    np.testing.assert_allclose(output[count:], trained["inputs"], atol=1e-3)
