"""The reference TF-slim checkpoints: catalogue, download, verification, installation, renaming.

Installed checkpoints are V2 (``PREFIX.index`` + ``PREFIX.data-*``) under ``checkpoint_dir()``,
named by the prefix they have in their tarball, which is where the model registry looks.
The 2016 tarballs hold V1 checkpoints (one file, no ``.index``); they are rewritten as V2.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..archives import extract_archive
from ..models.checkpoints import CheckpointError, checkpoint_exists, checkpoint_files
from .http import RetryPolicy, fetch_to_file, join_url, sha256_of_file

DEFAULT_CHECKPOINT_BASE_URL = "http://download.tensorflow.org/models/"
CHECKPOINT_BASE_URL_VARIABLE = "NIPS_ADV_CHECKPOINT_BASE_URL"
"""Folder URL holding the ``*.tar.gz`` files under their original names (a mirror of download.tensorflow.org/models/)."""

MAX_UNPACKED_BYTES = 4 * 1024**3
"""The largest reference tarball unpacks to about 0.3 GB; anything far beyond is not a checkpoint."""

_SCOPE = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)*")


class CheckpointDownloadError(Exception):
    """A checkpoint that cannot be installed (unknown name, bad archive content...); one line."""


class ChecksumMismatchError(CheckpointDownloadError):
    """The downloaded file's SHA-256 differs from the pinned one; the file is refused."""


@dataclass(frozen=True)
class CheckpointEntry:
    """One reference checkpoint.

    - ``file_name``: the tarball's name on download.tensorflow.org/models/ (or a mirror);
    - ``sha256``: its known digest, None where not pinned yet (the digest is then printed);
    - ``prefix``: the checkpoint prefix inside the tarball, and the installed name;
    - ``scope``: the variable scope all its model variables live under;
    - ``model``: the model of that name in nips_adv's registry, None where none is registered.
    """

    name: str
    file_name: str
    approx_bytes: int
    description: str
    sha256: str | None
    prefix: str
    scope: str
    model: str | None


_MB = 1000**2

# Sizes are approximate (packed); no digest is pinned: none could be checked against the originals here.
CATALOGUE: dict[str, CheckpointEntry] = {
    entry.name: entry
    for entry in (
        CheckpointEntry(
            "inception_v3", "inception_v3_2016_08_28.tar.gz", 100 * _MB,
            "Inception V3, ImageNet (V1 checkpoint, rewritten as V2 on install)",
            None, "inception_v3.ckpt", "InceptionV3", "inception_v3",
        ),
        CheckpointEntry(
            "adv_inception_v3", "adv_inception_v3_2017_08_18.tar.gz", 95 * _MB,
            "Inception V3, adversarially trained (Kurakin et al. 2016)",
            None, "adv_inception_v3.ckpt", "InceptionV3", "adv_inception_v3",
        ),
        CheckpointEntry(
            "ens3_adv_inception_v3", "ens3_adv_inception_v3_2017_08_18.tar.gz", 95 * _MB,
            "Inception V3, ensemble adversarial training with 3 models (Tramer et al. 2017)",
            None, "ens3_adv_inception_v3.ckpt", "InceptionV3", "ens3_adv_inception_v3",
        ),
        CheckpointEntry(
            "ens4_adv_inception_v3", "ens4_adv_inception_v3_2017_08_18.tar.gz", 95 * _MB,
            "Inception V3, ensemble adversarial training with 4 models (Tramer et al. 2017)",
            None, "ens4_adv_inception_v3.ckpt", "InceptionV3", "ens4_adv_inception_v3",
        ),
        CheckpointEntry(
            "ens_adv_inception_resnet_v2", "ens_adv_inception_resnet_v2_2017_08_18.tar.gz", 220 * _MB,
            "Inception-ResNet V2, ensemble adversarial training (Tramer et al. 2017)",
            None, "ens_adv_inception_resnet_v2.ckpt", "InceptionResnetV2", None,
        ),
        CheckpointEntry(
            "inception_resnet_v2", "inception_resnet_v2_2016_08_30.tar.gz", 220 * _MB,
            "Inception-ResNet V2, ImageNet",
            None, "inception_resnet_v2_2016_08_30.ckpt", "InceptionResnetV2", None,
        ),
        CheckpointEntry(
            "inception_v4", "inception_v4_2016_09_09.tar.gz", 170 * _MB,
            "Inception V4, ImageNet",
            None, "inception_v4.ckpt", "InceptionV4", None,
        ),
        CheckpointEntry(
            "resnet_v2_101", "resnet_v2_101_2017_04_14.tar.gz", 170 * _MB,
            "ResNet V2 101, ImageNet (1001 classes, inputs in [-1, 1])",
            None, "resnet_v2_101.ckpt", "resnet_v2_101", None,
        ),
        CheckpointEntry(
            "resnet_v2_152", "resnet_v2_152_2017_04_14.tar.gz", 230 * _MB,
            "ResNet V2 152, ImageNet (1001 classes, inputs in [-1, 1])",
            None, "resnet_v2_152.ckpt", "resnet_v2_152", None,
        ),
    )
}


def list_checkpoints() -> list[CheckpointEntry]:
    return list(CATALOGUE.values())


def get_checkpoint_entry(name: str) -> CheckpointEntry:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise CheckpointDownloadError(f"unknown checkpoint {name!r}; known: {', '.join(sorted(CATALOGUE))}") from None


def format_size(count: int) -> str:
    return f"~{count / _MB:.0f} MB"


def check_scope(scope: str) -> str:
    """``scope`` if it is a valid TF variable scope (letters, digits, ``_.-``, ``/`` between parts)."""
    if not _SCOPE.fullmatch(scope):
        raise CheckpointDownloadError(f"{scope!r} is not a valid variable scope (letters, digits, _ . - and / between parts)")
    return scope


def renamed_prefix(entry: CheckpointEntry, scope: str) -> str:
    """Installed name of ``entry`` with its variables moved to ``scope``: ``adv_inception_v3_SCOPE.ckpt``."""
    stem = entry.prefix[: -len(".ckpt")] if entry.prefix.endswith(".ckpt") else entry.prefix
    return f"{stem}_{scope.replace('/', '_')}.ckpt"


def rename_variable(name: str, rename_scope: tuple[str, str] | None) -> str:
    """``name`` with its leading scope ``old`` replaced by ``new``; names outside ``old`` (global_step) unchanged."""
    if rename_scope is None:
        return name
    old, new = rename_scope
    if name == old:
        return new
    if name.startswith(old + "/"):
        return new + name[len(old) :]
    return name


def rewrite_checkpoint(src_prefix: Path, dst_prefix: Path, rename_scope: tuple[str, str] | None = None) -> int:
    """Copy the checkpoint ``src_prefix`` (V1 or V2) to a V2 checkpoint at ``dst_prefix``; return the variable count.

    ``rename_scope = (old, new)`` moves every variable under scope ``old`` to ``new``, so two
    checkpoints of one architecture can be restored into one graph. The new files appear only
    when complete (``.index`` last). Raises CheckpointError when the source cannot be read.
    """
    from ..models.tf_compat import tf, tf1

    src_prefix, dst_prefix = Path(src_prefix), Path(dst_prefix)
    if rename_scope is not None:
        check_scope(rename_scope[1])
    try:
        reader = tf1.train.NewCheckpointReader(str(src_prefix))
    except (tf.errors.OpError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {src_prefix}: {message}") from None
    dtypes = reader.get_variable_to_dtype_map()
    names = sorted(dtypes)
    new_names = [rename_variable(name, rename_scope) for name in names]
    if len(set(new_names)) != len(new_names):
        raise CheckpointError(f"renaming {rename_scope} in {src_prefix} would give two variables the same name")

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
                tensor_names=new_names,
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
    """``prefix``: the installed checkpoint; ``renamed``: the renamed copy, if asked for;
    ``sha256``: digest of the tarball when one was fetched or given (None when already installed)."""

    prefix: Path
    sha256: str | None = None
    downloaded: bool = False
    renamed: Path | None = None


def install_checkpoint(
    entry: CheckpointEntry,
    *,
    directory: Path,
    base_url: str | None = None,
    archive: Path | None = None,
    expected_sha256: str | None = None,
    scope: str | None = None,
    force: bool = False,
    policy: RetryPolicy = RetryPolicy(),
    progress: bool = True,
    report: Callable[[str], None] = print,
) -> InstallResult:
    """Download (or take ``archive``), verify, extract safely and install ``entry`` under ``directory``.

    The tarball comes from ``base_url`` (else ``$NIPS_ADV_CHECKPOINT_BASE_URL``, else
    download.tensorflow.org/models/). Its SHA-256 is checked against ``expected_sha256`` or the
    catalogue's; where neither is known it is passed to ``report`` for the user to pin.
    ``scope`` also writes a copy with the variables moved from ``entry.scope`` to ``scope``.
    An installed checkpoint is kept unless ``force``. Raises CheckpointDownloadError
    (ChecksumMismatchError), FetchError or ArchiveError; nothing partial stays in ``directory``.
    """
    if scope is not None:
        check_scope(scope)
    directory = Path(directory)
    target = directory / entry.prefix
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
    if scope is not None:
        renamed = directory / renamed_prefix(entry, scope)
        if force or not checkpoint_exists(renamed):
            count = rewrite_checkpoint(target, renamed, rename_scope=(entry.scope, scope))
            report(f"{entry.name}: wrote {renamed} ({count} variables, scope {entry.scope} -> {scope})")
        else:
            report(f"{entry.name}: renamed copy already at {renamed}")
        result.renamed = renamed
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
        base = base_url or os.environ.get(CHECKPOINT_BASE_URL_VARIABLE) or DEFAULT_CHECKPOINT_BASE_URL
        source = join_url(base, entry.file_name)
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
