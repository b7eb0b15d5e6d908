"""Where checkpoints live and how a model's checkpoint prefix is found."""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_DIR_VARIABLE = "NIPS_ADV_CHECKPOINTS"


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or of another model; the message is one line."""


def cache_dir() -> Path:
    """Per-user cache folder of nips_adv (``$XDG_CACHE_HOME/nips_adv``, else ``~/.cache/nips_adv``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nips_adv"


def checkpoint_dir() -> Path:
    """Folder the tools search for checkpoints: ``$NIPS_ADV_CHECKPOINTS``, else ``cache_dir()/checkpoints``."""
    configured = os.environ.get(CHECKPOINT_DIR_VARIABLE)
    return Path(configured).expanduser() if configured else cache_dir() / "checkpoints"


def checkpoint_exists(prefix: Path) -> bool:
    """Whether ``prefix`` names a TF checkpoint (``PREFIX.index`` present)."""
    return Path(f"{prefix}.index").is_file()


def checkpoint_files(prefix: Path) -> list[Path]:
    """All files of the checkpoint ``prefix``: ``PREFIX.index`` and every ``PREFIX.data-*`` shard."""
    prefix = Path(prefix)
    files = [Path(f"{prefix}.index")] + sorted(prefix.parent.glob(f"{prefix.name}.data-*"))
    missing = [str(path) for path in files if not path.is_file()]
    if missing or len(files) < 2:
        raise CheckpointError(f"checkpoint {prefix} is incomplete: needs {prefix}.index and {prefix}.data-* files")
    return files


def normalise_checkpoint_path(path: Path) -> Path:
    """Accept a prefix, a file of the checkpoint (``.index``/``.data-...``/``.meta``) or a folder holding one."""
    path = Path(path).expanduser()
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise CheckpointError(f"no checkpoint (*.index) in folder {path}")
        raise CheckpointError(f"several checkpoints in folder {path}: pass one prefix, e.g. {indexes[0].with_suffix('')}")
    name = path.name
    for marker in (".index", ".meta"):
        if name.endswith(marker):
            return path.with_name(name[: -len(marker)])
    if ".data-" in name:
        return path.with_name(name.split(".data-")[0])
    return path
