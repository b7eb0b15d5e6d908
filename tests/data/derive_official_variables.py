"""Regenerates the pinned ``*_variables.txt`` lists: the variables of the organisers' TF-slim checkpoints.

Independent of ``nips_adv.models`` on purpose (the tests compare the builders against these files):
- Inception V4 (``inception_v4_2016_09_09``): layer names as Cadene's conversion of that file reads
  them (github.com/Cadene/tensorflow-model-zoo.torch, ``inceptionv4/tensorflow_dump.py``), layer shapes
  from Cadene's PyTorch port (github.com/Cadene/pretrained-models.pytorch,
  ``pretrainedmodels/models/inceptionv4.py``), auxiliary head from a public variable listing of a
  TF-slim Inception V4 (``AuxLogits/Conv2d_1b_1x1 [1,1,1024,128]``, ``AuxLogits/Conv2d_2a [5,5,128,768]``,
  ``AuxLogits/Aux_logits [768,1001]``).
- Inception-ResNet-v2 (``inception_resnet_v2_2016_08_30``, ``ens_adv_inception_resnet_v2_2017_08_18``):
  layer names in the order Cadene's conversion of the checkpoint reads them, shapes from Keras'
  independent ``InceptionResNetV2`` (built without weights, convolutions in creation order); the
  auxiliary head's scopes (``AuxLogits/Conv2d_1b_1x1``, ``Conv2d_2a_5x5``, ``Logits``) as fine-tuning
  recipes exclude them from that checkpoint, on the 17x17x1088 map.
- ResNet-v2-101/152 (``resnet_v2_{101,152}_2017_04_14``): tf-slim's naming rule
  (``block<b>/unit_<u>/bottleneck_v2/{preact,shortcut,conv1,conv2,conv3}``), shapes from Keras'
  ``ResNet101V2``/``ResNet152V2`` (the same layers: pre-activation units, 1x1 projection shortcut in
  each block's first unit, biased root/shortcut/conv3), logits as a 1x1 convolution to 1001 classes.

Checks printed here (and pinned in tests/test_architectures.py): Keras' parameter counts
(InceptionResNetV2 55,873,736; ResNet101V2 44,675,560; ResNet152V2 60,380,648, 1000 classes) plus
the background class, which must equal the pinned lists' totals without the auxiliary head.

Run: ``.venv/bin/python tests/data/derive_official_variables.py`` (needs keras; writes next to this file).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
CLASSES = 1001
BN = ("beta", "moving_mean", "moving_variance")  # Inception checkpoints: batch norm without gamma


def conv_bn(prefix: str, kh: int, kw: int, cin: int, cout: int, bn: tuple[str, ...] = BN) -> list[tuple[str, tuple]]:
    return [(f"{prefix}/weights", (kh, kw, cin, cout))] + [(f"{prefix}/BatchNorm/{v}", (cout,)) for v in bn]


def dense(prefix: str, cin: int, cout: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}/weights", (cin, cout)), (f"{prefix}/biases", (cout,))]


# ---- Inception V4: (name, cin, cout, kh, kw) per Cadene's port; k = 3x3 unless noted.
def inception_v4() -> list[tuple[str, tuple]]:
    rows = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3)]
    rows += [("Mixed_3a/Branch_1/Conv2d_0a_3x3", 64, 96, 3, 3)]
    rows += [
        ("Mixed_4a/Branch_0/Conv2d_0a_1x1", 160, 64, 1, 1),
        ("Mixed_4a/Branch_0/Conv2d_1a_3x3", 64, 96, 3, 3),
        ("Mixed_4a/Branch_1/Conv2d_0a_1x1", 160, 64, 1, 1),
        ("Mixed_4a/Branch_1/Conv2d_0b_1x7", 64, 64, 1, 7),
        ("Mixed_4a/Branch_1/Conv2d_0c_7x1", 64, 64, 7, 1),
        ("Mixed_4a/Branch_1/Conv2d_1a_3x3", 64, 96, 3, 3),
    ]
    rows += [("Mixed_5a/Branch_0/Conv2d_1a_3x3", 192, 192, 3, 3)]
    inception_a = [
        ("Branch_0/Conv2d_0a_1x1", 384, 96, 1, 1),
        ("Branch_1/Conv2d_0a_1x1", 384, 64, 1, 1),
        ("Branch_1/Conv2d_0b_3x3", 64, 96, 3, 3),
        ("Branch_2/Conv2d_0a_1x1", 384, 64, 1, 1),
        ("Branch_2/Conv2d_0b_3x3", 64, 96, 3, 3),
        ("Branch_2/Conv2d_0c_3x3", 96, 96, 3, 3),
        ("Branch_3/Conv2d_0b_1x1", 384, 96, 1, 1),
    ]
    reduction_a = [
        ("Branch_0/Conv2d_1a_3x3", 384, 384, 3, 3),
        ("Branch_1/Conv2d_0a_1x1", 384, 192, 1, 1),
        ("Branch_1/Conv2d_0b_3x3", 192, 224, 3, 3),
        ("Branch_1/Conv2d_1a_3x3", 224, 256, 3, 3),
    ]
    inception_b = [
        ("Branch_0/Conv2d_0a_1x1", 1024, 384, 1, 1),
        ("Branch_1/Conv2d_0a_1x1", 1024, 192, 1, 1),
        ("Branch_1/Conv2d_0b_1x7", 192, 224, 1, 7),
        ("Branch_1/Conv2d_0c_7x1", 224, 256, 7, 1),
        ("Branch_2/Conv2d_0a_1x1", 1024, 192, 1, 1),
        ("Branch_2/Conv2d_0b_7x1", 192, 192, 7, 1),
        ("Branch_2/Conv2d_0c_1x7", 192, 224, 1, 7),
        ("Branch_2/Conv2d_0d_7x1", 224, 224, 7, 1),
        ("Branch_2/Conv2d_0e_1x7", 224, 256, 1, 7),
        ("Branch_3/Conv2d_0b_1x1", 1024, 128, 1, 1),
    ]
    reduction_b = [
        ("Branch_0/Conv2d_0a_1x1", 1024, 192, 1, 1),
        ("Branch_0/Conv2d_1a_3x3", 192, 192, 3, 3),
        ("Branch_1/Conv2d_0a_1x1", 1024, 256, 1, 1),
        ("Branch_1/Conv2d_0b_1x7", 256, 256, 1, 7),
        ("Branch_1/Conv2d_0c_7x1", 256, 320, 7, 1),
        ("Branch_1/Conv2d_1a_3x3", 320, 320, 3, 3),
    ]
    inception_c = [
        ("Branch_0/Conv2d_0a_1x1", 1536, 256, 1, 1),
        ("Branch_1/Conv2d_0a_1x1", 1536, 384, 1, 1),
        ("Branch_1/Conv2d_0b_1x3", 384, 256, 1, 3),
        ("Branch_1/Conv2d_0c_3x1", 384, 256, 3, 1),
        ("Branch_2/Conv2d_0a_1x1", 1536, 384, 1, 1),
        ("Branch_2/Conv2d_0b_3x1", 384, 448, 3, 1),
        ("Branch_2/Conv2d_0c_1x3", 448, 512, 1, 3),
        ("Branch_2/Conv2d_0d_1x3", 512, 256, 1, 3),
        ("Branch_2/Conv2d_0e_3x1", 512, 256, 3, 1),
        ("Branch_3/Conv2d_0b_1x1", 1536, 256, 1, 1),
    ]
    blocks = [(f"Mixed_5{c}", inception_a) for c in "bcde"] + [("Mixed_6a", reduction_a)]
    blocks += [(f"Mixed_6{c}", inception_b) for c in "bcdefgh"] + [("Mixed_7a", reduction_b)]
    blocks += [(f"Mixed_7{c}", inception_c) for c in "bcd"]
    rows += [(f"{block}/{name}", *dims) for block, table in blocks for name, *dims in table]
    rows += [("AuxLogits/Conv2d_1b_1x1", 1024, 128, 1, 1), ("AuxLogits/Conv2d_2a", 128, 768, 5, 5)]
    variables = [v for name, cin, cout, kh, kw in rows for v in conv_bn(f"InceptionV4/{name}", kh, kw, cin, cout)]
    variables += dense("InceptionV4/AuxLogits/Aux_logits", 768, CLASSES) + dense("InceptionV4/Logits/Logits", 1536, CLASSES)
    return variables


# ---- Inception-ResNet-v2: names in checkpoint order (Cadene's loader), shapes from Keras.
def inception_resnet_v2_names() -> list[str]:
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    names += [f"Mixed_5b/{n}" for n in ("Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_5x5",
                                        "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3",
                                        "Branch_3/Conv2d_0b_1x1")]
    block35 = ("Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3", "Branch_2/Conv2d_0a_1x1",
               "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3", "Conv2d_1x1")
    names += [f"Repeat/block35_{i}/{n}" for i in range(1, 11) for n in block35]
    names += [f"Mixed_6a/{n}" for n in ("Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3",
                                        "Branch_1/Conv2d_1a_3x3")]
    block17 = ("Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1",
               "Conv2d_1x1")
    names += [f"Repeat_1/block17_{i}/{n}" for i in range(1, 21) for n in block17]
    names += [f"Mixed_7a/{n}" for n in ("Branch_0/Conv2d_0a_1x1", "Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1",
                                        "Branch_1/Conv2d_1a_3x3", "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3",
                                        "Branch_2/Conv2d_1a_3x3")]
    block8 = ("Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x3", "Branch_1/Conv2d_0c_3x1",
              "Conv2d_1x1")
    names += [f"Repeat_2/block8_{i}/{n}" for i in range(1, 10) for n in block8]
    names += [f"Block8/{n}" for n in block8] + ["Conv2d_7b_1x1"]
    return names


def inception_resnet_v2() -> tuple[list[tuple[str, tuple]], int]:
    import keras

    model = keras.applications.InceptionResNetV2(weights=None, classes=1000)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    # Auto-named conv2d, conv2d_1, ... count up in creation order, then conv_7b (Conv2d_7b_1x1); the
    # residual projections are block35_<i>_conv, block17_<i>_conv, block8_<i>_conv (last one block8_10).
    auto_named = [c for c in convs if re.fullmatch(r"conv2d(_\d+)?", c.name)]
    branch_convs = sorted(auto_named, key=lambda c: int(c.name[7:] or 0)) + [model.get_layer("conv_7b")]
    projections = {c.name: c for c in convs if c not in branch_convs}
    variables = []
    for name in inception_resnet_v2_names():
        match = re.fullmatch(r"(?:Repeat(?:_\d)?/(block\d+)_(\d+)|(Block8))/Conv2d_1x1", name)
        if match:
            keras_name = f"{match[1]}_{match[2]}_conv" if match[1] else "block8_10_conv"
            layer = projections.pop(keras_name)
            assert layer.use_bias
            variables += [(f"InceptionResnetV2/{name}/weights", tuple(layer.kernel.shape)),
                          (f"InceptionResnetV2/{name}/biases", tuple(layer.bias.shape))]
        else:
            layer = branch_convs.pop(0)
            assert not layer.use_bias
            variables += conv_bn(f"InceptionResnetV2/{name}", *layer.kernel.shape)
    assert not branch_convs and not projections, "every Keras convolution is matched to one checkpoint name"
    dense_layer = model.get_layer("predictions")
    variables += dense("InceptionResnetV2/Logits/Logits", dense_layer.kernel.shape[0], CLASSES)
    variables += conv_bn("InceptionResnetV2/AuxLogits/Conv2d_1b_1x1", 1, 1, 1088, 128)
    variables += conv_bn("InceptionResnetV2/AuxLogits/Conv2d_2a_5x5", 5, 5, 128, 768)
    variables += dense("InceptionResnetV2/AuxLogits/Logits", 768, CLASSES)
    return variables, model.count_params()


# ---- ResNet-v2: tf-slim names from Keras' layer names.
def resnet_v2(depth: int) -> tuple[list[tuple[str, tuple]], int]:
    import keras

    model = {101: keras.applications.ResNet101V2, 152: keras.applications.ResNet152V2}[depth](weights=None)
    scope = f"resnet_v2_{depth}"
    parts = {"preact_bn": "preact", "0_conv": "shortcut", "1_conv": "conv1", "1_bn": "conv1/BatchNorm",
             "2_conv": "conv2", "2_bn": "conv2/BatchNorm", "3_conv": "conv3"}
    renamed = {"kernel": "weights", "bias": "biases"}
    variables = []
    for weight in model.weights:
        layer, variable = weight.path.split("/")
        variable = renamed.get(variable, variable)
        if match := re.fullmatch(r"conv(\d)_block(\d+)_(\w+)", layer):
            name = f"{scope}/block{int(match[1]) - 1}/unit_{match[2]}/bottleneck_v2/{parts[match[3]]}/{variable}"
        elif layer == "predictions":  # Dense(2048, 1000) -> 1x1 convolution to 1001 classes
            shape = (1, 1, weight.shape[0], CLASSES) if variable == "weights" else (CLASSES,)
            variables.append((f"{scope}/logits/{variable}", shape))
            continue
        else:
            name = f"{scope}/" + {"conv1_conv": "conv1", "post_bn": "postnorm"}[layer] + f"/{variable}"
        variables.append((name, tuple(weight.shape)))
    return variables, model.count_params()


def write(file_name: str, variables: list[tuple[str, tuple]], source: str) -> None:
    names = [name for name, _ in variables]
    assert len(set(names)) == len(names), "duplicate names"
    total = sum(math.prod(shape) for _, shape in variables)
    lines = [f"# {line}" for line in source.splitlines()]
    lines.append(f"# {len(variables)} variables, {total:,} values; regenerate with derive_official_variables.py")
    lines += [f"{name} {','.join(map(str, shape))}" for name, shape in sorted(variables)]
    (HERE / file_name).write_text("\n".join(lines) + "\n")
    print(file_name, len(variables), f"{total:,}")


def main() -> None:
    write("inception_v4_variables.txt", inception_v4(),
          "Variables of inception_v4_2016_09_09 (inception_v4.ckpt), scope InceptionV4.\n"
          "Names: Cadene's conversion of that file; shapes: Cadene's PyTorch port; aux head: public listing.")
    variables, keras_count = inception_resnet_v2()
    print("Keras InceptionResNetV2 parameters (1000 classes, no aux head):", f"{keras_count:,}")
    write("inception_resnet_v2_variables.txt", variables,
          "Variables of inception_resnet_v2_2016_08_30 and ens_adv_inception_resnet_v2_2017_08_18, scope InceptionResnetV2.\n"
          "Names: Cadene's conversion of that file; shapes: Keras InceptionResNetV2; aux head scopes: fine-tuning recipes.")
    for depth in (101, 152):
        variables, keras_count = resnet_v2(depth)
        print(f"Keras ResNet{depth}V2 parameters (1000 classes):", f"{keras_count:,}")
        write(f"resnet_v2_{depth}_variables.txt", variables,
              f"Variables of resnet_v2_{depth}_2017_04_14 (resnet_v2_{depth}.ckpt), scope resnet_v2_{depth}.\n"
              f"Names: tf-slim's resnet_v2 naming rule; shapes: Keras ResNet{depth}V2.")


if __name__ == "__main__":
    main()
