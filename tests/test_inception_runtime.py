"""Inception V3 through the catalogue and the classifier, on a random-weight checkpoint with the official names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nips_adv.attacks import method_config, sign_gradient_attack
from nips_adv.attacks.losses import cross_entropy, own_labels
from nips_adv.attacks.transforms import InputDiversity
from nips_adv.contract.epsilon import max_perturbation
from nips_adv.models import CheckpointError, UnknownModelError, get_model_spec, list_models
from nips_adv.models.classifier import Classifier


@pytest.fixture(scope="module")
def classifier(inception_v3_checkpoint: Path) -> Classifier:
    with Classifier.create("inception_v3", inception_v3_checkpoint) as model:
        yield model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(4, 299, 299, 3), dtype=np.uint8)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_checkpoint_has_the_official_variable_names_and_parameter_count(inception_v3_checkpoint: Path) -> None:
    from nips_adv.models.tf_compat import tf

    shapes = tf.compat.v1.train.NewCheckpointReader(str(inception_v3_checkpoint)).get_variable_to_shape_map()
    assert shapes["InceptionV3/Conv2d_1a_3x3/weights"] == [3, 3, 3, 32]
    assert shapes["InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_variance"] == [32]
    assert shapes["InceptionV3/Mixed_7c/Branch_3/Conv2d_0b_1x1/weights"] == [1, 1, 2048, 192]
    assert shapes["InceptionV3/Logits/Conv2d_1c_1x1/weights"] == [1, 1, 2048, 1001]
    assert shapes["InceptionV3/AuxLogits/Conv2d_2b_1x1/weights"] == [1, 1, 768, 1001]
    assert all(name.startswith("InceptionV3/") for name in shapes)
    assert len(shapes) == 388
    # Without the auxiliary head: Keras' InceptionV3 (same layers, 1000 classes) has 23,851,784
    # values; the background class adds 2048 weights and 1 bias.
    main_head = sum(int(np.prod(shape)) for name, shape in shapes.items() if "/AuxLogits/" not in name)
    assert main_head == 23_851_784 + 2049
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == 27_182_194


def test_registry_lists_models_and_rejects_unknown_names() -> None:
    assert {"inception_v3", "adv_inception_v3", "ens3_adv_inception_v3"} <= set(list_models())
    spec = get_model_spec("inception_v3")
    assert (spec.num_classes, spec.label_offset, spec.image_size, spec.scope) == (1001, 1, 299, "InceptionV3")
    with pytest.raises(UnknownModelError, match="known models: .*inception_v3"):
        get_model_spec("vgg_16")


def test_logits_are_in_label_order_and_predictions_are_labels(classifier: Classifier, images: np.ndarray) -> None:
    logits = classifier.logits(images)
    assert logits.shape == (4, 1000) and logits.dtype == np.float32
    labels = classifier.predict(images)
    assert labels.tolist() == (np.argmax(logits, axis=1) + 1).tolist()
    assert all(1 <= label <= 1000 for label in labels)
    np.testing.assert_allclose(classifier.logits(images.astype(np.float32)), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_gradient_flows_back_through_the_resize_of_odd_sizes(classifier: Classifier) -> None:
    odd = np.random.default_rng(1).integers(0, 256, size=(2, 180, 240, 3), dtype=np.uint8)
    gradient = classifier.gradient_function(cross_entropy)(odd, classifier.predict(odd))
    assert gradient.shape == odd.shape
    assert np.count_nonzero(gradient) > 0.9 * gradient.size
    diverse = classifier.gradient_function(cross_entropy, InputDiversity(probability=1.0))(odd, np.array([1, 2]))
    assert diverse.shape == odd.shape and np.isfinite(diverse).all()
    assert not np.allclose(diverse, classifier.gradient_function(cross_entropy)(odd, np.array([1, 2])))


@pytest.mark.slow
def test_non_targeted_attack_changes_the_white_box_prediction(classifier: Classifier, images: np.ndarray) -> None:
    clean_labels = classifier.predict(images)
    adversarial = sign_gradient_attack(
        classifier, images, 16, labels=None, targeted=False, config=method_config("mi-fgsm", iterations=3)
    )
    assert max_perturbation(adversarial, images) <= 16
    changed = classifier.predict(adversarial) != clean_labels
    assert changed.sum() >= 3


def test_weighted_labels_give_the_weighted_sum_of_gradients(classifier: Classifier, images: np.ndarray) -> None:
    pixels = images[:2]
    first, second = np.array([3, 700]), np.array([500, 12])
    gradient_of = classifier.gradient_function(cross_entropy)
    gradient_first, gradient_second = gradient_of(pixels, first), gradient_of(pixels, second)
    weights = np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)
    gradient_both = gradient_of(pixels, np.stack([first, second], axis=1), weights)
    expected = weights[:, 0, None, None, None] * gradient_first + weights[:, 1, None, None, None] * gradient_second
    np.testing.assert_allclose(gradient_both, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_own_labels_are_the_top_classes_weighted_by_probability(classifier: Classifier, images: np.ndarray) -> None:
    pixels = images[:2]
    logits = classifier.logits(pixels)
    own, own_weights = own_labels(logits, 3)
    assert own.tolist() == (np.argsort(-logits, axis=1)[:, :3] + 1).tolist()
    assert own[:, 0].tolist() == classifier.predict(pixels).tolist()
    top = np.take_along_axis(logits, own - 1, axis=1)
    np.testing.assert_allclose(own_weights, _softmax(top), rtol=1e-4, atol=1e-6)


def test_targeted_attack_raises_the_target_probability_on_every_image(classifier: Classifier, images: np.ndarray) -> None:
    targets = np.array([1, 250, 500, 1000])
    adversarial = sign_gradient_attack(
        classifier, images, 16, labels=targets, targeted=True, config=method_config("mi-fgsm", iterations=3)
    )
    rows = np.arange(len(targets))
    before = _softmax(classifier.logits(images))[rows, targets - 1]
    after = _softmax(classifier.logits(adversarial))[rows, targets - 1]
    assert np.all(after > before)


def test_checkpoint_of_another_model_is_named(tmp_path: Path) -> None:
    from nips_adv.models.tf_compat import tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        tf1.get_variable("resnet_v2_50/conv1/weights", shape=[2, 2])
        saver = tf1.train.Saver()
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            prefix = saver.save(session, str(tmp_path / "other.ckpt"), write_meta_graph=False)
    with pytest.raises(CheckpointError, match="does not hold inception_v3 .*under 'resnet_v2_50/'") as caught:
        Classifier.create("inception_v3", Path(prefix))
    assert "\n" not in str(caught.value)


def test_missing_and_corrupt_checkpoints_are_one_line_errors(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        Classifier.create("inception_v3", tmp_path / "nothing.ckpt")
    broken = tmp_path / "broken.ckpt"
    Path(f"{broken}.index").write_bytes(Path(f"{inception_v3_checkpoint}.index").read_bytes())
    data = Path(f"{inception_v3_checkpoint}.data-00000-of-00001").read_bytes()
    Path(f"{broken}.data-00000-of-00001").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as caught:
        Classifier.create("inception_v3", broken)
    assert "\n" not in str(caught.value) and str(broken) in str(caught.value)


def test_default_checkpoint_is_looked_up_in_the_checkpoint_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inception_v3_checkpoint: Path
) -> None:
    monkeypatch.setenv("NIPS_ADV_CHECKPOINTS", str(tmp_path))
    with pytest.raises(CheckpointError, match=f"{tmp_path}.*nips-adv download checkpoint inception_v3"):
        get_model_spec("inception_v3").default_checkpoint()
    for source in inception_v3_checkpoint.parent.glob("inception_v3.ckpt.*"):
        (tmp_path / source.name).symlink_to(source)
    assert get_model_spec("inception_v3").default_checkpoint() == tmp_path / "inception_v3.ckpt"
