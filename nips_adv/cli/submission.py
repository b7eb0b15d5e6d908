"""``nips-adv package`` and ``nips-adv validate``: build a track's archive, check one as the organisers would."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ..contract.constants import BATCH_IMAGES, BATCH_TIME_LIMIT_S, MAX_EPSILON, SUBMISSION_TYPES
from ..models import list_models
from ..submission.package import DEFAULT_IMAGE
from .common import fail


@click.command(name="package", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("submission_type", metavar="TYPE", type=click.Choice(SUBMISSION_TYPES))
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="TF checkpoint prefix (or a folder holding one); all its files go into the archive. "
    "Default: the model's own checkpoint, as the tools find it.",
)
@click.option("--model", "model_name", type=click.Choice(list_models()), default="inception_v3", show_default=True)
@click.option(
    "--image",
    default=None,
    help=f"Docker image for metadata.json 'container', pushed to a registry the organisers can pull from "
    f"(e.g. USER/nips-adv:0.1.0)  [default: the local tag {DEFAULT_IMAGE}, with a warning].",
)
@click.option("--gpu-image", default=None, help="Docker image for 'container_gpu'  [default: --image's tag + '-gpu'].")
@click.option(
    "--tool-options",
    default="",
    metavar="'OPTIONS'",
    help="Extra options for the tool, e.g. '--method di-mi-fgsm --iterations 20' (quoted as in a shell).",
)
@click.option(
    "--template",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Template folder  [default: nips_adv's own template for TYPE].",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="OUT.zip, .tar or .tar.gz.")
def package_command(
    submission_type: str,
    checkpoint: Path | None,
    model_name: str,
    image: str | None,
    gpu_image: str | None,
    tool_options: str,
    template: Path | None,
    output: Path,
) -> None:
    """Build the competition archive of one track (TYPE: attack, targeted_attack, defense).

    The archive holds the template's entry point, metadata.json with the image names, model.env
    naming the model and checkpoint, and the checkpoint files. Exit status: 0 written, 2 error.
    """
    from ..archives import ArchiveError
    from ..models import CheckpointError, UnknownModelError
    from ..submission.metadata import SubmissionError
    from ..submission.package import package_submission, unpullable_image_warning

    try:
        options = shlex.split(tool_options)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--tool-options") from None
    try:
        packaged = package_submission(
            submission_type,
            output,
            checkpoint=checkpoint,
            model=model_name,
            image=image or DEFAULT_IMAGE,
            gpu_image=gpu_image,
            tool_options=options,
            template=template,
        )
    except (ArchiveError, CheckpointError, SubmissionError, UnknownModelError) as error:
        fail("nips-adv package", str(error))
    except OSError as error:
        fail("nips-adv package", f"{error.filename or output}: {error.strerror or error}")
    metadata = packaged.metadata
    click.echo(
        f"wrote {packaged.archive} ({packaged.archive.stat().st_size / 1e6:.1f} MB, "
        f"{packaged.unpacked_bytes / 1e6:.1f} MB unpacked): {metadata.type}, model {packaged.model}, "
        f"checkpoint {packaged.checkpoint.name}, images {metadata.container} / {metadata.container_gpu}"
    )
    click.echo(f"files: {', '.join(packaged.members)}")
    if image is None:
        click.echo(unpullable_image_warning(metadata.container, metadata.container_gpu), err=True)


@click.command(name="validate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--type", "submission_type", type=click.Choice(SUBMISSION_TYPES), required=True, help="The track it is submitted to."
)
@click.option(
    "--eps", type=click.IntRange(0, MAX_EPSILON), default=None, help="MAX_EPSILON of the trial  [default: one of 4, 8, 12, 16]."
)
@click.option("--seed", type=int, default=None, help="Seed of the random images and eps (printed, to repeat a run).")
@click.option(
    "--num-images", type=click.IntRange(min=1), default=BATCH_IMAGES, show_default=True, help="Random images in the trial."
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=BATCH_TIME_LIMIT_S,
    show_default=True,
    metavar="SECONDS",
    help="Seconds before the run is killed with all its processes.",
)
@click.option("--docker", is_flag=True, help="Run in the metadata's image with the organisers' docker command (needs an engine).")
@click.option("--gpu", is_flag=True, help="With --docker: the container_gpu image and --gpus all.")
@click.option(
    "--network",
    is_flag=True,
    help="Local run: keep the network. By default it is cut (unshare) where the system allows, "
    "so run-time downloads fail as they would in the competition.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Errors, not warnings, for what the organisers' validator accepted and their evaluation fixed "
    "(RGBA/grey/palette PNGs, pixels beyond eps, result rows without .png, labels outside 1..1000).",
)
@click.option("--keep", is_flag=True, help="Keep the temporary folder (inputs, outputs, logs) and print where it is.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors and the verdict.")
def validate_command(
    archive: Path,
    submission_type: str,
    eps: int | None,
    seed: int | None,
    num_images: int,
    time_limit: float,
    docker: bool,
    gpu: bool,
    network: bool,
    strict: bool,
    keep: bool,
    quiet: bool,
) -> None:
    """Check ARCHIVE as the organisers' validator does, then more.

    Extracts it safely, checks metadata.json, runs the entry point on random 299x299 images
    (as the organisers do: the submission folder as working directory, killed past the time
    limit) and checks every output. Without --docker the entry point runs as you, on this
    machine: validate archives you trust, or use --docker.

    Exit status: 0 valid, 1 invalid, 2 the check could not run.
    """
    from ..submission.runner import Runner, network_isolation_available
    from ..submission.validate import Finding, validate_submission

    if gpu and not docker:
        raise click.UsageError("--gpu needs --docker")
    notes = []
    offline = False
    if not docker and not network:
        offline = network_isolation_available()
        if not offline:
            notes.append(
                Finding("warning", "cannot cut the network for a local run here (unshare); run-time downloads would "
                        "go unnoticed: use --docker to check that")
            )
    runner = Runner("docker" if docker else "local", gpu=gpu, offline=offline)
    report = validate_submission(
        archive,
        submission_type=submission_type,
        epsilon=eps,
        seed=seed,
        num_images=num_images,
        time_limit=time_limit,
        runner=runner,
        keep=keep,
        strict=strict,
        progress=None if quiet else lambda line: click.echo(f"nips-adv validate: {line}...", err=True),
    )
    report.findings[:0] = notes
    lines = report.lines()
    if quiet:
        lines = [line for line in lines[1:-1] if line.lstrip().startswith("ERROR")] + lines[-1:]
    click.echo("\n".join(lines))
    sys.exit(report.status)
