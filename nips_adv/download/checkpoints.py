"""The reference TF-slim checkpoints: download, verification, installation (the table is ``models/catalogue.py``).

Installed checkpoints are V2 (``PREFIX.index`` + ``PREFIX.data-*``) under ``checkpoint_dir()``,
named as the catalogue says, which is where the tools look. Each keeps its original variable names:
the classifier restores several files of one architecture into one graph through name maps.
The 2016 tarballs hold V1 checkpoints (one file, no ``.index``); they are rewritten as V2.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..models.catalogue import CATALOGUE as MODEL_CATALOGUE
from ..models.catalogue import TF_MODELS_URL, CatalogueEntry
from ..models.checkpoints import CheckpointError, checkpoint_exists, checkpoint_files
from ..submission.archives import extract_archive
from .http import RetryPolicy, fetch_to_file, join_url, sha256_of_file

DEFAULT_CHECKPOINT_BASE_URL = TF_MODELS_URL
CHECKPOINT_BASE_URL_VARIABLE = "NIPS_ADV_CHECKPOINT_BASE_URL"
"""Folder URL holding the ``*.tar.gz`` files under their original names (a mirror of download.tensorflow.org/models/)."""

MAX_UNPACKED_BYTES = 4 * 1024**3
"""The largest reference tarball unpacks to about 0.3 GB; anything far beyond is not a checkpoint."""


class CheckpointDownloadError(Exception):
    """A checkpoint that cannot be installed (unknown name, bad archive content...); one line."""


class ChecksumMismatchError(CheckpointDownloadError):
    """The downloaded file's SHA-256 differs from the pinned one; the file is refused."""


CheckpointEntry = CatalogueEntry
"""A downloadable entry of the catalogue (``url`` set)."""

_MB = 1000**2

CATALOGUE: dict[str, CatalogueEntry] = {name: entry for name, entry in MODEL_CATALOGUE.items() if entry.downloadable}
"""The catalogue's entries that ``nips-adv download checkpoint`` fetches."""


def list_checkpoints() -> list[CatalogueEntry]:
    return list(CATALOGUE.values())


def get_checkpoint_entry(name: str) -> CatalogueEntry:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise CheckpointDownloadError(f"unknown checkpoint {name!r}; known: {', '.join(sorted(CATALOGUE))}") from None


def format_size(count: int) -> str:
    return f"~{count / _MB:.0f} MB"


def rewrite_checkpoint(src_prefix: Path, dst_prefix: Path) -> int:
    """Copy the checkpoint ``src_prefix`` (V1 or V2) to a V2 checkpoint at ``dst_prefix``, names unchanged;
    return the variable count. The new files appear only when complete (``.index`` last).
    Raises CheckpointError when the source cannot be read.
    """
    from ..models.tf_compat import tf, tf1

    src_prefix, dst_prefix = Path(src_prefix), Path(dst_prefix)
    try:
        reader = tf1.train.NewCheckpointReader(str(src_prefix))
    except (tf.errors.OpError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {src_prefix}: {message}") from None
    dtypes = reader.get_variable_to_dtype_map()
    names = sorted(dtypes)

    dst_prefix.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst_prefix.name}.", dir=dst_prefix.parent))
    try:
        staged_prefix = staging / dst_prefix.name
        graph = tf.Graph()
        with graph.as_default():
            # Placeholders, not constants: the weights are fed once instead of copied into the graph.
            placeholders = [tf1.placeholder(dtypes[name], shape=None) for name in names]
            save = tf.raw_ops.SaveV2(
                prefix=str(staged_prefix),
                tensor_names=names,
                shape_and_slices=[""] * len(names),
                tensors=placeholders,
            )
            with tf1.Session(graph=graph) as session:
                session.run(save, {placeholder: reader.get_tensor(name) for placeholder, name in zip(placeholders, names)})
        _move_checkpoint(staged_prefix, dst_prefix)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(names)


def _move_checkpoint(src_prefix: Path, dst_prefix: Path) -> None:
    """Move a V2 checkpoint's files to ``dst_prefix``: data shards first, ``.index`` last (it marks completeness)."""
    files = checkpoint_files(src_prefix)
    remove_checkpoint(dst_prefix)
    for path in files[1:]:
        os.replace(path, dst_prefix.parent / (dst_prefix.name + path.name[len(src_prefix.name) :]))
    os.replace(files[0], Path(f"{dst_prefix}.index"))


def remove_checkpoint(prefix: Path) -> None:
    """Delete the files of checkpoint ``prefix`` (``.index`` first, so it never looks complete meanwhile)."""
    prefix = Path(prefix)
    Path(f"{prefix}.index").unlink(missing_ok=True)
    for path in prefix.parent.glob(f"{prefix.name}.data-*"):
        path.unlink(missing_ok=True)


def find_checkpoint_in_tree(root: Path, prefix_name: str) -> tuple[Path, bool]:
    """The checkpoint ``prefix_name`` inside an extracted tarball and whether it is V2.

    Falls back to the only checkpoint there when the name differs. Raises CheckpointDownloadError
    when there is none or several.
    """
    files = sorted(path for path in root.rglob("*") if path.is_file() and not path.is_symlink())
    for path in files:
        if path.name == f"{prefix_name}.index":
            return path.with_name(prefix_name), True
    for path in files:
        if path.name == prefix_name:
            return path, False
    indexes = [path for path in files if path.name.endswith(".index")]
    singles = [path for path in files if path.name.endswith(".ckpt")]
    if len(indexes) == 1:
        return indexes[0].with_name(indexes[0].name[: -len(".index")]), True
    if not indexes and len(singles) == 1:
        return singles[0], False
    found = ", ".join(str(path.relative_to(root)) for path in files[:10]) or "nothing"
    raise CheckpointDownloadError(f"the tarball holds no checkpoint {prefix_name} (found: {found})")


@dataclass
class InstallResult:
    """``prefix``: the installed checkpoint; ``sha256``: digest of the tarball when one was fetched
    or given (None when already installed)."""

    prefix: Path
    sha256: str | None = None
    downloaded: bool = False


def install_checkpoint(
    entry: CheckpointEntry,
    *,
    directory: Path,
    base_url: str | None = None,
    archive: Path | None = None,
    expected_sha256: str | None = None,
    force: bool = False,
    policy: RetryPolicy = RetryPolicy(),
    progress: bool = True,
    report: Callable[[str], None] = print,
) -> InstallResult:
    """Download (or take ``archive``), verify, extract safely and install ``entry`` under ``directory``.

    The tarball comes from ``base_url`` (else ``$NIPS_ADV_CHECKPOINT_BASE_URL``, else
    download.tensorflow.org/models/). Its SHA-256 is checked against ``expected_sha256`` or the
    catalogue's; where neither is known it is passed to ``report`` for the user to pin.
    An installed checkpoint is kept unless ``force``. Raises CheckpointDownloadError
    (ChecksumMismatchError), FetchError or ArchiveError; nothing partial stays in ``directory``.
    """
    directory = Path(directory)
    target = directory / entry.checkpoint_file
    result = InstallResult(prefix=target)
    if force or not checkpoint_exists(target):
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".download-{entry.name}-", dir=directory))
        try:
            result.sha256 = _fetch_and_install(
                entry, staging, target,
                base_url=base_url, archive=archive, expected_sha256=expected_sha256,
                policy=policy, progress=progress, report=report,
            )
            result.downloaded = archive is None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        report(f"{entry.name}: installed {target}")
    else:
        report(f"{entry.name}: already installed at {target} (--force to fetch it again)")
    return result


def _fetch_and_install(
    entry: CheckpointEntry,
    staging: Path,
    target: Path,
    *,
    base_url: str | None,
    archive: Path | None,
    expected_sha256: str | None,
    policy: RetryPolicy,
    progress: bool,
    report: Callable[[str], None],
) -> str:
    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():
            raise CheckpointDownloadError(f"{archive}: no such file")
        source = str(archive)
        digest = sha256_of_file(archive)
    else:
        base = base_url or os.environ.get(CHECKPOINT_BASE_URL_VARIABLE)
        if entry.url is None:
            raise CheckpointDownloadError(f"{entry.name}: no download URL (it comes from a package)")
        source = join_url(base, entry.file_name) if base else entry.url
        archive = staging / entry.file_name
        digest = _download(source, archive, entry, policy=policy, progress=progress)

    expected = (expected_sha256 or entry.sha256 or "").strip().lower() or None
    if expected is not None and digest != expected:
        raise ChecksumMismatchError(f"{source}: SHA-256 {digest} does not match the expected {expected}; file refused")
    if expected is None:
        report(f"{entry.name}: SHA-256 of {entry.file_name} is {digest} (not pinned; check it next time with --sha256 {digest})")
    else:
        report(f"{entry.name}: SHA-256 verified")

    extracted = extract_archive(archive, staging / "extracted", max_unpacked_bytes=MAX_UNPACKED_BYTES)
    source_prefix, is_v2 = find_checkpoint_in_tree(extracted, entry.prefix)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_v2:
        try:
            _move_checkpoint(source_prefix, target)
        except CheckpointError as error:
            raise CheckpointDownloadError(f"{source}: {error}") from None
    else:
        report(f"{entry.name}: converting the V1 checkpoint {entry.prefix} to V2")
        rewrite_checkpoint(source_prefix, target)
    return digest


def _download(url: str, destination: Path, entry: CheckpointEntry, *, policy: RetryPolicy, progress: bool) -> str:
    from tqdm import tqdm

    with tqdm(
        total=entry.approx_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.name,
        disable=not progress, file=sys.stderr,
    ) as bar:

        def on_progress(received: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(received - bar.n)

        return fetch_to_file(url, destination, policy=policy, on_progress=on_progress)
