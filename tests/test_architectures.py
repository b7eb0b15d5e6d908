"""The organisers' other TF-slim architectures: Inception V4, Inception-ResNet-v2, ResNet-v2-101/152.

Each builder's variables must equal, name by name and shape by shape, the variables of the official
checkpoint files, pinned in tests/data/<architecture>_variables.txt. Those lists are derived
independently of nips_adv (tests/data/derive_official_variables.py: names as public conversions of
the official files read them, shapes from Keras' and Cadene's independent implementations); their
totals are checked here against Keras' published parameter counts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from nips_adv.models import inception_resnet_v2, inception_v4, resnet_v2

DATA = Path(__file__).parent / "data"
IMAGE_SIZE = 299
BACKGROUND_CLASS = 1536 + 1  # TF-slim's 1001st class: one more row of weights and one bias


class Architecture(NamedTuple):
    builder: Callable
    scope: str
    variables_file: str
    variable_count: int
    total_values: int
    values_without_aux: int
    has_aux: bool
    restore: bool  # write and restore a random-weight checkpoint (skipped for the largest graph)

    @property
    def full_builder(self) -> Callable:
        """The builder with the auxiliary head, where there is one: the checkpoint's complete variable set."""
        return functools.partial(self.builder, with_aux_logits=True) if self.has_aux else self.builder


ARCHITECTURES = {
    # 42,712,937 without the auxiliary head: the ~42.7M usually quoted for Inception V4.
    "inception_v4": Architecture(
        inception_v4.build_inception_v4_logits, "InceptionV4", "inception_v4_variables.txt",
        608, 46_074_066, 42_712_937, has_aux=True, restore=True,
    ),
    # Keras' InceptionResNetV2 (same layers, 1000 classes, no auxiliary head): 55,873,736 values.
    "inception_resnet_v2": Architecture(
        inception_resnet_v2.build_inception_resnet_v2_logits, "InceptionResnetV2", "inception_resnet_v2_variables.txt",
        908, 59_244_594, 55_873_736 + BACKGROUND_CLASS, has_aux=True, restore=True,
    ),
    # Keras' ResNet101V2 / ResNet152V2: 44,675,560 / 60,380,648 values; the 1001st class adds 2048 + 1.
    "resnet_v2_101": Architecture(
        resnet_v2.build_resnet_v2_101_logits, "resnet_v2_101", "resnet_v2_101_variables.txt",
        544, 44_677_609, 44_675_560 + 2049, has_aux=False, restore=True,
    ),
    "resnet_v2_152": Architecture(
        resnet_v2.build_resnet_v2_152_logits, "resnet_v2_152", "resnet_v2_152_variables.txt",
        816, 60_382_697, 60_380_648 + 2049, has_aux=False, restore=False,
    ),
}


def pinned_variables(file_name: str) -> dict[str, tuple[int, ...]]:
    """``name -> shape`` from a pinned list (``name d0,d1,...`` per line, ``#`` comments)."""
    lines = (DATA / file_name).read_text().splitlines()
    rows = [line.split() for line in lines if line and not line.startswith("#")]
    return {name: tuple(int(d) for d in shape.split(",")) for name, shape in rows}


def graph_variables(prefix: str = "") -> dict[str, tuple[int, ...]]:
    """The default graph's global variables under ``prefix``, with ``prefix`` removed: ``name -> shape``."""
    from nips_adv.models.tf_compat import tf1

    return {
        variable.op.name[len(prefix):]: tuple(variable.shape.as_list())
        for variable in tf1.global_variables()
        if variable.op.name.startswith(prefix)
    }


def total(variables: dict[str, tuple[int, ...]]) -> int:
    return sum(int(np.prod(shape)) for shape in variables.values())


def without_aux(variables: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {name: shape for name, shape in variables.items() if "/AuxLogits/" not in name}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_pinned_list_matches_the_published_parameter_counts(name: str) -> None:
    architecture = ARCHITECTURES[name]
    official = pinned_variables(architecture.variables_file)
    assert len(official) == architecture.variable_count
    assert total(official) == architecture.total_values
    assert total(without_aux(official)) == architecture.values_without_aux
    assert all(name.startswith(architecture.scope + "/") for name in official)


def probe_images() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, architecture in ARCHITECTURES.items() if architecture.restore])
def test_two_copies_in_one_graph_have_the_official_variables_and_restore_from_an_official_layout_file(
    name: str, tmp_path: Path
) -> None:
    """The ensemble layer builds each network under its own prefix in one graph. Copy 0 (with the
    auxiliary head) writes a random-weight checkpoint with the official names; copy 1 (inference)
    restores it through a name map and then gives copy 0's logits."""
    from nips_adv.models.tf_compat import tf, tf1

    architecture = ARCHITECTURES[name]
    official = pinned_variables(architecture.variables_file)
    prefix = tmp_path / f"{name}.ckpt"
    with tf.Graph().as_default() as graph:
        tf1.set_random_seed(0)
        images = tf1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        with tf1.variable_scope("member_0"):
            writer_logits = architecture.full_builder(images, architecture.scope)
        with tf1.variable_scope("member_1"):
            logits = architecture.builder(images, architecture.scope)
        assert graph_variables("member_0/") == official
        assert graph_variables("member_1/") == without_aux(official)
        assert len(tf1.global_variables()) == len(official) + len(without_aux(official))
        assert writer_logits.shape.as_list() == logits.shape.as_list() == [None, 1001]

        def name_map(member: str) -> dict:
            return {v.op.name[len(member) + 1:]: v for v in tf1.global_variables() if v.op.name.startswith(member + "/")}

        with tf1.Session(graph=graph) as session:
            session.run(tf1.variables_initializer(list(name_map("member_0").values())))  # member_1 is restored
            tf1.train.Saver(var_list=name_map("member_0")).save(
                session, str(prefix), write_meta_graph=False, write_state=False
            )
            tf1.train.Saver(var_list=name_map("member_1")).restore(session, str(prefix))
            written, restored = session.run([writer_logits, logits], {images: probe_images()})
    stored = tf1.train.NewCheckpointReader(str(prefix)).get_variable_to_shape_map()
    assert {name: tuple(shape) for name, shape in stored.items()} == official
    assert restored.shape == (2, 1001) and np.isfinite(restored).all() and np.std(restored) > 0
    np.testing.assert_allclose(restored, written, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, architecture in ARCHITECTURES.items() if not architecture.restore])
def test_variables_equal_the_official_checkpoint(name: str) -> None:
    """The largest graph: names and shapes only (a restore would cost seconds for nothing new)."""
    from nips_adv.models.tf_compat import tf, tf1

    architecture = ARCHITECTURES[name]
    with tf.Graph().as_default():
        images = tf1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        logits = architecture.full_builder(images)
        assert graph_variables() == pinned_variables(architecture.variables_file)
    assert logits.shape.as_list() == [None, 1001]


@pytest.mark.slow
def test_building_again_in_the_same_scope_reuses_the_variables() -> None:
    from nips_adv.models.tf_compat import tf, tf1

    with tf.Graph().as_default():
        images = tf1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        resnet_v2.build_resnet_v2_101_logits(images)
        count = len(tf1.global_variables())
        resnet_v2.build_resnet_v2_101_logits(images[:, ::-1])
        assert len(tf1.global_variables()) == count


def test_module_constants() -> None:
    assert inception_v4.NUM_CLASSES == inception_resnet_v2.NUM_CLASSES == resnet_v2.NUM_CLASSES == 1001
    assert (inception_v4.SCOPE, inception_resnet_v2.SCOPE) == ("InceptionV4", "InceptionResnetV2")
    assert (resnet_v2.SCOPE_101, resnet_v2.SCOPE_152) == ("resnet_v2_101", "resnet_v2_152")
