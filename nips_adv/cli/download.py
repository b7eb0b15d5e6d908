"""``nips-adv download``: the dev/final datasets and the reference TF-slim checkpoints."""

from __future__ import annotations

from pathlib import Path

import click

from ..download.checkpoints import CHECKPOINT_BASE_URL_VARIABLE, DEFAULT_CHECKPOINT_BASE_URL
from ..download.dataset import DATASET_BASE_URL_VARIABLE, DEFAULT_JOBS, IMAGE_MIRROR_VARIABLE, OFFICIAL_DATASETS
from ..download.http import RetryPolicy
from .common import EXIT_SOME_FAILED, HELP_OPTIONS, INPUT_FILE, OUTPUT_FOLDER, Command, failing_on, quiet_option

PROGRAM = "nips-adv download"
FAILURES_LISTED = 10
"""Failed images named on stderr; the rest are in failed.csv."""


def _retry_options(function: Command) -> Command:
    """--retries, --deadline, --timeout, --backoff and --quiet: how hard to try, shared by both downloads."""
    function = click.option(
        "--backoff", type=click.FloatRange(min=0), default=1.0, show_default=True,
        help="Seconds before the first retry; doubles for each further one (at most 30).",
    )(function)
    function = click.option(
        "--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
        help="Seconds a request may wait for the connection or for more data.",
    )(function)
    function = click.option(
        "--deadline", type=click.FloatRange(min=0, min_open=True), default=None,
        help="Seconds one file may take in all, retries included [default: 180 per image, 1800 per checkpoint].",
    )(function)
    function = click.option(
        "--retries", type=click.IntRange(min=0), default=3, show_default=True,
        help="Further attempts after a failed request (404 and other permanent errors are not retried).",
    )(function)
    return quiet_option(function)


@click.group("download", context_settings=HELP_OPTIONS)
def download_group() -> None:
    """Download the competition datasets and the reference checkpoints.

    Proxies: the standard http_proxy / https_proxy / no_proxy variables are honoured.
    """


@download_group.command("dataset")
@click.argument("source", metavar=f"{'|'.join(OFFICIAL_DATASETS)}|CSV_PATH_OR_URL")
@click.option("--out", "output_dir", type=OUTPUT_FOLDER, required=True,
              help="Folder for the IMAGEID.png files, the dataset CSV and failed.csv (created if needed).")
@click.option("--csv-url", help="Fetch the dev/final CSV from this URL instead.")
@click.option("--base-url", help=f"Folder URL holding dev_dataset.csv and final_dataset.csv "
              f"[env {DATASET_BASE_URL_VARIABLE}; default: the organisers' repository].")
@click.option("--image-mirror", help="Folder URL with the images laid out as HOST/PATH (as wget --mirror writes "
              f"them) [env {IMAGE_MIRROR_VARIABLE}; default: the URLs in the CSV].")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=DEFAULT_JOBS, show_default=True,
              help="Images fetched in parallel.")
@_retry_options
def dataset_command(source: str, output_dir: Path, csv_url: str | None, base_url: str | None,
                    image_mirror: str | None, jobs: int, retries: int, timeout: float, deadline: float | None, backoff: float, quiet: bool) -> None:
    """Download a dataset: its CSV, then every image cropped to its box and resized to 299x299 PNG.

    SOURCE is dev, final, a local dataset CSV or its URL. Images already in --out are skipped,
    so running again resumes. Images that cannot be had are listed in --out/failed.csv with the
    reason; the exit status is then 1 (2 when the CSV itself cannot be used).
    """
    from ..download.dataset import DatasetError, download_dataset

    policy = RetryPolicy(attempts=retries + 1, backoff_s=backoff, timeout_s=timeout, deadline_s=deadline)
    with failing_on(PROGRAM, DatasetError, path=output_dir):
        summary = download_dataset(
            source, output_dir, csv_url=csv_url, base_url=base_url, image_mirror=image_mirror,
            jobs=jobs, policy=policy, progress=not quiet,
        )
    for failure in summary.failures[:FAILURES_LISTED]:
        click.echo(f"failed: {failure.image_id}: {failure.reason}", err=True)
    if len(summary.failures) > FAILURES_LISTED:
        click.echo(f"... and {len(summary.failures) - FAILURES_LISTED} more in {summary.failed_csv}", err=True)
    click.echo(summary.describe())
    if summary.failures:
        raise SystemExit(EXIT_SOME_FAILED)


@download_group.command("checkpoint")
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the known checkpoints with their size and exit.")
@click.option("--dir", "directory", type=OUTPUT_FOLDER, default=None,
              help="Where to install [default: $NIPS_ADV_CHECKPOINTS or ~/.cache/nips_adv/checkpoints, "
              "where the tools look].")
@click.option("--base-url", help=f"Folder URL holding the *.tar.gz files under their original names "
              f"[env {CHECKPOINT_BASE_URL_VARIABLE}; default: {DEFAULT_CHECKPOINT_BASE_URL}].")
@click.option("--archive", type=INPUT_FILE,
              help="Install from this already downloaded tarball instead of fetching it.")
@click.option("--sha256", help="Expected SHA-256 of the tarball (overrides the catalogue's); a mismatch refuses it.")
@click.option("--force", is_flag=True, help="Fetch and install again even if already installed.")
@_retry_options
def checkpoint_command(name: str | None, list_only: bool, directory: Path | None, base_url: str | None,
                       archive: Path | None, sha256: str | None, force: bool,
                       retries: int, timeout: float, deadline: float | None, backoff: float, quiet: bool) -> None:
    """Download, verify and install the reference TF-slim checkpoint NAME (see --list)."""
    from ..download.checkpoints import format_size, get_checkpoint_entry, list_checkpoints

    if list_only:
        entries = list_checkpoints()
        width = max(len(entry.name) for entry in entries)
        for entry in entries:
            model = f" [model {entry.model}]" if entry.model else ""
            click.echo(f"{entry.name:<{width}}  {format_size(entry.approx_bytes):>8}  {entry.description}{model}")
        return
    if name is None:
        raise click.UsageError("give a checkpoint NAME or --list")
    if sha256 is not None and not (len(sha256.strip()) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha256.strip())):
        raise click.BadParameter(f"{sha256!r} is not a SHA-256 (64 hex digits)", param_hint="--sha256")

    from ..download.checkpoints import CheckpointDownloadError, install_checkpoint
    from ..download.http import FetchError
    from ..models.checkpoints import CheckpointError, checkpoint_dir
    from ..submission.archives import ArchiveError

    policy = RetryPolicy(attempts=retries + 1, backoff_s=backoff, timeout_s=timeout, deadline_s=deadline)
    with failing_on(PROGRAM, CheckpointDownloadError, CheckpointError, FetchError, ArchiveError, path=directory or ""):
        entry = get_checkpoint_entry(name)
        result = install_checkpoint(
            entry, directory=directory if directory is not None else checkpoint_dir(),
            base_url=base_url, archive=archive, expected_sha256=sha256, force=force,
            policy=policy, progress=not quiet, report=lambda line: click.echo(line, err=True),
        )
    click.echo(str(result.prefix))
