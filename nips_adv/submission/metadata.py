"""``metadata.json``: the four fields every submission declares, read and checked as the organisers do."""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from ..contract.constants import SUBMISSION_TYPES

METADATA_FILE = "metadata.json"
METADATA_FIELDS = ("type", "container", "container_gpu", "entry_point")
_MAX_METADATA_BYTES = 64 * 1024

# A Docker image reference: [registry[:port]/]name[/name...][:tag][@digest] (distribution/reference grammar).
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOCKER_REFERENCE = re.compile(
    rf"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
    rf"{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*"
    rf"(?::[\w][\w.-]{{0,127}})?(?:@[a-z0-9]+:[a-f0-9]{{32,}})?$"
)


class SubmissionError(Exception):
    """A submission folder the organisers would reject; the message says which file and why."""


@dataclass(frozen=True)
class SubmissionMetadata:
    """The contents of ``metadata.json``.

    ``type`` is one of SUBMISSION_TYPES; ``container``/``container_gpu`` are Docker image names
    for the CPU and NVIDIA runtimes; ``entry_point`` is a path relative to the submission folder.
    """

    type: str
    container: str
    container_gpu: str
    entry_point: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def is_docker_image_name(name: str) -> bool:
    """Whether ``name`` parses as a Docker image reference (``repo/name:tag``, optionally with a registry/digest)."""
    return len(name) <= 255 and bool(_DOCKER_REFERENCE.match(name))


def read_metadata(submission_dir: Path, *, expected_type: str | None = None) -> tuple[SubmissionMetadata, list[str]]:
    """Read and check ``submission_dir/metadata.json``; return it and a list of warnings.

    Raises SubmissionError naming the problem: missing file, invalid JSON, missing or empty
    fields, an unknown ``type`` or one other than ``expected_type``, a container name Docker
    would refuse, or an entry point that is missing, outside the folder, or not executable.
    Warnings: the entry point is not a ``.sh`` (the organisers' validator warns too), it is
    executable by its owner only, unknown extra fields.
    """
    submission_dir = Path(submission_dir)
    path = submission_dir / METADATA_FILE
    if not path.is_file():
        raise SubmissionError(f"{path}: missing; every submission needs a {METADATA_FILE} with {', '.join(METADATA_FIELDS)}")
    if path.stat().st_size > _MAX_METADATA_BYTES:
        raise SubmissionError(f"{path}: {path.stat().st_size} bytes, far too large for a {METADATA_FILE}")
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise SubmissionError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise SubmissionError(f"{path}: invalid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise SubmissionError(f"{path}: JSON nested too deeply to be a {METADATA_FILE}") from None
    if not isinstance(document, dict):
        raise SubmissionError(f"{path}: must hold a JSON object with {', '.join(METADATA_FIELDS)}, got {type(document).__name__}")

    missing = [name for name in METADATA_FIELDS if name not in document]
    if missing:
        raise SubmissionError(f"{path}: missing field(s) {', '.join(missing)}")
    for name in METADATA_FIELDS:
        value = document[name]
        if not isinstance(value, str) or not value.strip():
            raise SubmissionError(f"{path}: field {name!r} must be a non-empty string, got {json.dumps(value)}")
    metadata = SubmissionMetadata(**{name: document[name] for name in METADATA_FIELDS})
    warnings: list[str] = []
    extra = sorted(set(document) - set(METADATA_FIELDS))
    if extra:
        warnings.append(f"{path}: unknown field(s) ignored: {', '.join(extra)}")

    if metadata.type not in SUBMISSION_TYPES:
        raise SubmissionError(f"{path}: unknown type {metadata.type!r}; expected one of {', '.join(SUBMISSION_TYPES)}")
    if expected_type is not None and metadata.type != expected_type:
        raise SubmissionError(f"{path}: type is {metadata.type!r} but the submission is for the {expected_type!r} track")
    for name in ("container", "container_gpu"):
        value = getattr(metadata, name)
        if not is_docker_image_name(value):
            raise SubmissionError(f"{path}: {name} {value!r} is not a valid Docker image name")

    warnings += _check_entry_point(submission_dir, metadata.entry_point, path)
    return metadata, warnings


def _check_entry_point(submission_dir: Path, entry_point: str, metadata_path: Path) -> list[str]:
    relative = PurePosixPath(entry_point)
    if relative.is_absolute() or ".." in relative.parts or "\\" in entry_point:
        raise SubmissionError(
            f"{metadata_path}: entry_point {entry_point!r} must be a path inside the submission folder (relative, no '..')"
        )
    path = submission_dir.joinpath(*relative.parts)
    real_root = os.path.realpath(submission_dir)
    real_path = os.path.realpath(path)
    if not (real_path == real_root or real_path.startswith(real_root + os.sep)):
        raise SubmissionError(f"{metadata_path}: entry point {entry_point!r} leads outside the submission folder")
    if not path.exists():
        raise SubmissionError(f"{metadata_path}: entry point {entry_point!r} not found in {submission_dir}")
    if not path.is_file():
        raise SubmissionError(f"{metadata_path}: entry point {entry_point!r} is not a file")
    mode = path.stat().st_mode
    if not mode & 0o111:
        raise SubmissionError(
            f"{path}: entry point is not executable (mode {stat.filemode(mode)}); run chmod +x {entry_point} before archiving"
        )
    warnings = []
    if mode & 0o111 != 0o111:
        warnings.append(
            f"{path}: entry point is not executable by everyone (mode {stat.filemode(mode)}); "
            "a container running as another user may not be able to run it"
        )
    if relative.suffix != ".sh":
        warnings.append(f"{path}: entry point is not a .sh script (the organisers' validator warns about this)")
    return warnings
