"""Ensembles: several networks in one graph, each from its own original checkpoint file, fused; and the
tools' model lists. Two random-weight Inception V3 files with the official names stand in for
inception_v3 and adv_inception_v3 (same architecture, same scope ``InceptionV3``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from click.testing import CliRunner

from nips_adv.cli.attack import attack_command
from nips_adv.cli.defense import defense_command
from nips_adv.cli.main import main
from nips_adv.contract.epsilon import max_perturbation
from nips_adv.contract.images import read_png, write_png
from nips_adv.models import CheckpointError, ModelListError, UnknownModelError
from nips_adv.models.classifier import Classifier, Member, parse_members, resolve_networks

WEIGHTS = (1.0, 3.0)  # normalised: 0.25, 0.75


def _logit_loss(logits, labels, weights):
    """Linear in the logits, so the ensemble's gradient must be the weighted sum of the members' exactly."""
    from nips_adv.models.tf_compat import tf

    return tf.reduce_sum(weights * tf.gather(logits, labels - 1, batch_dims=1))


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nips_adv.models import get_model_spec
    from nips_adv.models.random_weights import write_random_checkpoint

    return write_random_checkpoint(get_model_spec("adv_inception_v3"), tmp_path_factory.mktemp("adv") / "adv_inception_v3.ckpt", seed=2)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(1, 299, 299, 3), dtype=np.uint8)


class Outputs(NamedTuple):
    logits: np.ndarray
    members: np.ndarray
    gradient: np.ndarray


@pytest.fixture(scope="module")
def outputs(inception_v3_checkpoint: Path, second_checkpoint: Path, pixels: np.ndarray) -> dict[str, Outputs]:
    """Logits, member logits and the logit-loss gradient of each network alone and of the ensemble."""
    labels = np.array([[5, 900]])
    label_weights = np.array([[1.0, -0.5]], np.float32)
    runs = {
        "first": ("inception_v3", [inception_v3_checkpoint]),
        "second": ("adv_inception_v3", [second_checkpoint]),
        "ensemble": ("inception_v3:1,adv_inception_v3:3", f"{inception_v3_checkpoint},{second_checkpoint}"),
    }
    results = {}
    for key, (models, checkpoints) in runs.items():
        with Classifier.create(models, checkpoints) as classifier:
            gradient = classifier.gradient_function(_logit_loss)(pixels, labels, label_weights)
            results[key] = Outputs(classifier.logits(pixels), classifier.member_logits(pixels), gradient)
            if key == "ensemble":
                assert classifier.names == ("inception_v3", "adv_inception_v3") and classifier.weights == (0.25, 0.75)
                names = {variable.op.name.split("/", 2)[0] + "/" + variable.op.name.split("/", 2)[1]
                         for variable in classifier._graph.get_collection("variables")}
                assert names == {"m0/InceptionV3", "m1/InceptionV3"}  # the files' own scope, under one graph scope each
    return results


@pytest.mark.slow
def test_two_checkpoints_of_one_architecture_give_each_alone_s_logits(outputs: dict[str, Outputs]) -> None:
    first, second, ensemble = outputs["first"].logits, outputs["second"].logits, outputs["ensemble"]
    assert not np.allclose(first, second)  # two different files
    np.testing.assert_allclose(ensemble.members[0], first, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ensemble.members[1], second, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fused_logits_are_the_weighted_mean(outputs: dict[str, Outputs]) -> None:
    expected = 0.25 * outputs["first"].logits + 0.75 * outputs["second"].logits
    np.testing.assert_allclose(outputs["ensemble"].logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_ensemble_gradient_is_the_weighted_sum_of_the_members(outputs: dict[str, Outputs]) -> None:
    expected = 0.25 * outputs["first"].gradient + 0.75 * outputs["second"].gradient
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(outputs["ensemble"].gradient, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_probability_fusion_is_the_log_of_the_weighted_mean_probability(tmp_path: Path) -> None:
    """On two linear toy networks (logits = pixels @ W), so the expected value is exact and cheap."""
    from nips_adv.models.classifier import Network
    from nips_adv.models.networks import Architecture
    from nips_adv.models.tf_compat import tf, tf1

    side = 2

    def build_logits(images, scope):
        with tf1.variable_scope(scope):
            weights = tf1.get_variable("weights", [side * side * 3, 1000])
        return tf.matmul(tf.reshape(images, [-1, side * side * 3]), weights)

    toy = Architecture("toy", "linear", "Toy", 1000, side, lambda pixels: pixels / 255.0, build_logits)
    rng = np.random.default_rng(3)
    matrices, networks = [], []
    for index, weight in enumerate(WEIGHTS):
        matrices.append(rng.normal(0, 3.0, size=(side * side * 3, 1000)).astype(np.float32))
        graph = tf.Graph()
        with graph.as_default():
            variable = tf1.get_variable("Toy/weights", initializer=matrices[-1])
            with tf1.Session(graph=graph) as session:
                session.run(variable.initializer)
                prefix = tf1.train.Saver([variable]).save(session, str(tmp_path / f"toy{index}.ckpt"), write_meta_graph=False)
        networks.append(Network(f"toy{index}", toy, Path(prefix), "Toy", weight))
    pixels = rng.integers(0, 256, size=(3, side, side, 3)).astype(np.float32)
    member_logits = [(pixels.reshape(3, -1) / 255.0).astype(np.float64) @ matrix for matrix in matrices]

    def softmax(logits: np.ndarray) -> np.ndarray:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    with Classifier(networks, fusion="probabilities") as classifier:
        fused = classifier.logits(pixels)
    expected = np.log(0.25 * softmax(member_logits[0]) + 0.75 * softmax(member_logits[1]))
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-4)
    with Classifier(networks) as classifier:
        np.testing.assert_allclose(classifier.logits(pixels), 0.25 * member_logits[0] + 0.75 * member_logits[1], rtol=1e-4, atol=1e-4)


def test_a_checkpoint_of_another_architecture_names_both(inception_v3_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        Classifier.create("efficientnet_lite0", inception_v3_checkpoint)
    message = str(caught.value)
    assert "\n" not in message and str(inception_v3_checkpoint) in message
    assert "does not hold efficientnet_lite0" in message and "it holds a inception_v3 checkpoint" in message


# --- model lists -------------------------------------------------------------------------------------------


class BadList(NamedTuple):
    models: str
    checkpoints: str | None
    message: str


BAD_LISTS = [
    BadList("inception_v3,vgg_16", None, "unknown model 'vgg_16'; known models: .*efficientnet_lite0"),
    BadList("inception_v3,,efficientnet_lite0", None, "empty model name in the model list 'inception_v3,,efficientnet_lite0'"),
    BadList("inception_v3:0", None, "weight '0' of model inception_v3 is not a positive number"),
    BadList("inception_v3:-1", None, "weight '-1' of model inception_v3 is not a positive number"),
    BadList("inception_v3:heavy", None, "weight 'heavy' of model inception_v3 is not a positive number"),
    BadList("inception_v3:nan", None, "weight 'nan' of model inception_v3 is not a positive number"),
    BadList("inception_v3,efficientnet_lite0", "a.ckpt", "1 checkpoint.*'a.ckpt' for 2 model.*one per model"),
    BadList("inception_v3", "a.ckpt,b.ckpt", "2 checkpoint.*'a.ckpt,b.ckpt' for 1 model"),
]


@pytest.mark.parametrize("case", BAD_LISTS, ids=lambda case: case.message[:30])
def test_bad_model_lists_raise_one_line(case: BadList) -> None:
    with pytest.raises(ModelListError, match=case.message) as caught:
        parse_members(case.models, case.checkpoints)
    assert "\n" not in str(caught.value)


def test_model_lists_parse_names_weights_and_default_checkpoints() -> None:
    assert parse_members(" inception_v3 , efficientnet_lite1:0.25", ",b.ckpt") == [
        Member("inception_v3"), Member("efficientnet_lite1", 0.25, Path("b.ckpt"))]
    assert parse_members("efficientnet_lite0", Path("x.ckpt")) == [Member("efficientnet_lite0", 1.0, Path("x.ckpt"))]
    with pytest.raises(UnknownModelError):
        parse_members("nope")


def test_one_file_for_two_architectures_is_refused_before_anything_is_read(inception_v3_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelListError, match="checkpoint .*inception_v3.ckpt is given for inception_v3 .*efficientnet_lite0"):
        resolve_networks(parse_members("inception_v3,efficientnet_lite0", [inception_v3_checkpoint] * 2))


# --- the tools ---------------------------------------------------------------------------------------------


def _inputs(folder: Path, count: int) -> dict[str, np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(4)
    clean = {}
    for index in range(count):
        clean[f"{index}.png"] = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        write_png(clean[f"{index}.png"], folder / f"{index}.png")
    return clean


@pytest.mark.e2e
def test_an_ensemble_attack_keeps_the_bound_writes_every_batch_and_reports_unreadable_inputs(
    tmp_path: Path, inception_v3_checkpoint: Path, second_checkpoint: Path
) -> None:
    clean = _inputs(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG not really")
    result = CliRunner().invoke(
        attack_command,
        [str(tmp_path / "in"), str(tmp_path / "out"), "7.5", "--model", "inception_v3,adv_inception_v3:0.5",
         "--checkpoint", f"{inception_v3_checkpoint},{second_checkpoint}", "--method", "bsr:iterations=2", "--batch-size", "1",
         "-q"],
    )
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(clean)
    for name, pixels in clean.items():
        written = read_png(tmp_path / "out" / name)
        assert written.shape == pixels.shape and max_perturbation(written, pixels) <= 7.5
        assert not np.array_equal(written, pixels)


@pytest.mark.e2e
def test_an_ensemble_defense_and_score_take_the_model_list_from_the_environment(
    tmp_path: Path, inception_v3_checkpoint: Path, second_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inputs(tmp_path / "in", 2)
    monkeypatch.setenv("NIPS_ADV_MODEL", "inception_v3,adv_inception_v3")
    checkpoints = f"{inception_v3_checkpoint},{second_checkpoint}"
    defended = CliRunner().invoke(defense_command, [str(tmp_path / "in"), str(tmp_path / "result.csv"), "--plain", "--checkpoint", checkpoints, "-q"])
    assert defended.exit_code == 0, defended.output
    rows = dict(line.split(",") for line in (tmp_path / "result.csv").read_text().splitlines())
    assert sorted(rows) == ["0.png", "1.png"]
    dataset = tmp_path / "dev.csv"
    dataset.write_text("ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass\n0,u,0,0,1,1,5,6\n1,u,0,0,1,1,7,8\n")
    scored = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--dataset", str(dataset), "--checkpoint", checkpoints, "--json", "-q"])
    assert scored.exit_code == 0, scored.output
    summary = json.loads(scored.stdout)
    assert summary["model"] == "inception_v3,adv_inception_v3"
    assert {entry["image"]: str(entry["predicted"]) for entry in summary["predictions"]} == rows


@pytest.mark.parametrize(
    "options, message",
    [
        (["--model", "inception_v3,vgg_16"], "unknown model 'vgg_16'"),
        (["--model", "inception_v3,adv_inception_v3", "--checkpoint", "a.ckpt"], "1 checkpoint(s) 'a.ckpt' for 2 model(s)"),
        (["--model", "inception_v3:0"], "weight '0' of model inception_v3 is not a positive number"),
        (["--model", "inception_v3,efficientnet_lite0", "--checkpoint", "SAME,SAME"], "models of different architectures"),
    ],
)
def test_bad_model_lists_stop_the_tools_with_one_line_and_exit_2(
    tmp_path: Path, inception_v3_checkpoint: Path, options: list[str], message: str
) -> None:
    _inputs(tmp_path / "in", 1)
    options = [option.replace("SAME", str(inception_v3_checkpoint)) for option in options]
    runs = {
        "nips-attack": (attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "8"]),
        "nips-defense": (defense_command, [str(tmp_path / "in"), str(tmp_path / "out.csv")]),
        "nips-adv score": (main, ["score", str(tmp_path / "in"), "--dataset", str(tmp_path / "in" / "0.png")]),
    }
    for program, (command, arguments) in runs.items():
        result = CliRunner().invoke(command, [*arguments, *options])
        assert result.exit_code == 2, (program, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{program}: error: ") and message in lines[0], (program, lines)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in"]  # nothing written


def test_models_lists_architectures_and_checkpoints_and_where_the_weights_are(
    tmp_path: Path, inception_v3_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nips_adv.models.catalogue import CATALOGUE
    from nips_adv.models.networks import list_architectures

    monkeypatch.setenv("NIPS_ADV_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for source in inception_v3_checkpoint.parent.glob("inception_v3.ckpt.*"):
        (tmp_path / source.name).symlink_to(source)
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split()[:3] == ["inception_v3", "inception_v3", "present:"] for line in lines)
    assert any(line.split()[:3] == ["adv_inception_v3", "inception_v3", "absent:"] for line in lines)
    assert any(line.split()[:3] == ["efficientnet_lite0", "efficientnet_lite0", "not"] for line in lines)
    for name in CATALOGUE:
        assert any(line.split()[:1] == [name] for line in lines), name
    for name in list_architectures():
        assert any(line.split()[:2] == [name, "scope"] for line in lines), name
    assert not (tmp_path / "cache").exists()  # listing converts nothing
