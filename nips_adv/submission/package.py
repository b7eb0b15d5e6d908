"""Build a competition archive for one track: the template folder, the checkpoint, the metadata.

The archive holds, at its top level, the template's files (``run_attack.sh`` or
``run_defense.sh`` with its run bit), ``metadata.json`` naming the Docker images,
``model.env`` naming the model and checkpoint, and every file of the checkpoint
(``PREFIX.index``, ``PREFIX.data-*``). The entry point passes that checkpoint explicitly, so
the tools in the container never look for, download or convert one.
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
from dataclasses import dataclass, replace
from pathlib import Path

from .. import __version__
from ..archives import archive_kind
from ..atomic import atomic_path
from ..contract.constants import MAX_ARCHIVE_BYTES, MAX_UNPACKED_BYTES, SUBMISSION_TYPES
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
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
"""Package data: one template folder per track (``templates/attack``...), so an installed wheel can package."""

_SAFE_CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class PackagedSubmission:
    """What ``package_submission`` wrote: the archive, its metadata, and the files in it (name -> bytes)."""

    archive: Path
    metadata: SubmissionMetadata
    model: str
    checkpoint: Path
    members: dict[str, int]

    @property
    def unpacked_bytes(self) -> int:
        return sum(self.members.values())


def gpu_image_for(image: str) -> str:
    """The GPU image name that goes with ``image``: its tag (default ``latest``) plus ``-gpu``."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    return f"{name}:{tag or 'latest'}-gpu"


def template_dir(submission_type: str) -> Path:
    """The template folder of ``submission_type`` (package data); SubmissionError if absent."""
    if submission_type not in SUBMISSION_TYPES:
        raise SubmissionError(f"unknown submission type {submission_type!r}; expected one of {', '.join(SUBMISSION_TYPES)}")
    folder = TEMPLATES_DIR / submission_type
    if not (folder / METADATA_FILE).is_file():
        raise SubmissionError(f"template {folder} not found: the nips_adv installation is incomplete; reinstall it or pass --template DIR")
    return folder


def model_env_text(model: str, checkpoint_name: str, tool_options: Sequence[str]) -> str:
    """``model.env`` (bash): MODEL, CHECKPOINT (prefix relative to the submission folder), TOOL_OPTIONS (array)."""
    options = " ".join(shlex.quote(option) for option in tool_options)
    return (
        "# Written by `nips-adv package`: the model, its checkpoint prefix (relative to this folder) and\n"
        "# extra options for the tool. Sourced by the entry point; bash syntax.\n"
        f"MODEL={shlex.quote(model)}\n"
        f"CHECKPOINT={shlex.quote(checkpoint_name)}\n"
        f"TOOL_OPTIONS=({options})\n"
    )


def package_submission(
    submission_type: str,
    output: Path,
    *,
    checkpoint: Path | None = None,
    model: str = "inception_v3",
    image: str = DEFAULT_IMAGE,
    gpu_image: str | None = None,
    tool_options: Sequence[str] = (),
    template: Path | None = None,
) -> PackagedSubmission:
    """Write the archive ``output`` (.zip, .tar, .tar.gz: the organisers' names) for one track and return what it holds.

    ``checkpoint`` is a TF checkpoint prefix (or a file of it, or a folder holding one); None
    takes ``model``'s default checkpoint. ``image``/``gpu_image`` go into ``metadata.json``
    (``gpu_image`` defaults to ``gpu_image_for(image)``). ``tool_options`` are appended to the
    tool's command line (e.g. ``["--method", "di-mi-fgsm"]``). The archive is written to a
    temporary name and renamed when complete. Raises SubmissionError (bad template, image name,
    size over the limits), CheckpointError, UnknownModelError, ArchiveError (extension).
    """
    from ..models import get_model_spec, resolve_checkpoint
    from ..models.checkpoints import checkpoint_files

    output = Path(output)
    archive_kind(output)
    source = Path(template) if template is not None else template_dir(submission_type)
    template_metadata, _ = read_metadata(source, expected_type=submission_type)
    gpu_image = gpu_image or gpu_image_for(image)
    for label, name in (("--image", image), ("--gpu-image", gpu_image)):
        if not is_docker_image_name(name):
            raise SubmissionError(f"{label} {name!r} is not a valid Docker image name")
    metadata = replace(template_metadata, container=image, container_gpu=gpu_image)

    spec = get_model_spec(model)
    prefix = resolve_checkpoint(spec, checkpoint)
    if not _SAFE_CHECKPOINT_NAME.match(prefix.name):
        raise SubmissionError(f"checkpoint name {prefix.name!r}: use letters, digits, '.', '_' and '-' only")
    files: dict[str, Path | bytes] = {}
    executable = {metadata.entry_point}
    for path in sorted(source.iterdir()):
        if path.name in (METADATA_FILE, MODEL_ENV_FILE) or path.name.startswith(".") or not path.is_file():
            continue
        files[path.name] = path
        if path.stat().st_mode & 0o111:
            executable.add(path.name)
    for path in checkpoint_files(prefix):
        files[path.name] = path
    files[METADATA_FILE] = metadata.to_json().encode("utf-8")
    files[MODEL_ENV_FILE] = model_env_text(model, prefix.name, tool_options).encode("utf-8")

    members = {name: len(content) if isinstance(content, bytes) else content.stat().st_size for name, content in files.items()}
    unpacked = sum(members.values())
    if unpacked > MAX_UNPACKED_BYTES:
        raise SubmissionError(f"the submission would unpack to {unpacked} bytes, over the limit of {MAX_UNPACKED_BYTES}")
    _write_archive(output, files, executable=executable)
    if output.stat().st_size > MAX_ARCHIVE_BYTES:
        size = output.stat().st_size
        output.unlink()
        raise SubmissionError(f"{output}: {size} bytes, over the archive limit of {MAX_ARCHIVE_BYTES}; nothing written")
    return PackagedSubmission(archive=output, metadata=metadata, model=model, checkpoint=prefix, members=members)


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


