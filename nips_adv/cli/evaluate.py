"""``nips-adv evaluate`` (the organisers' run_attacks_and_defenses.py) and ``nips-adv report``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from ..contract.constants import BATCH_TIME_LIMIT_S
from .common import configure_logging, fail


class EvaluationEpsilonType(click.ParamType):
    """An integer MAX_EPSILON 0..255, or ``cycle`` (4, 8, 12, 16 per batch of 100, as in the final round)."""

    name = "EPS|cycle"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "cycle":
            return "cycle"
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is neither an integer 0..255 nor 'cycle'", param, ctx)
        if not 0 <= number <= 255:
            self.fail(f"{number} is outside 0..255", param, ctx)
        return number


_FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command(name="evaluate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--attacks-dir", "--attacks_dir", "attacks_dir", type=_FOLDER, help="Non-targeted attacks: submission folders or archives.")
@click.option("--targeted-attacks-dir", "--targeted_attacks_dir", "targeted_attacks_dir", type=_FOLDER, help="Targeted attacks.")
@click.option("--defenses-dir", "--defenses_dir", "defenses_dir", type=_FOLDER, required=True, help="Defenses.")
@click.option("--dataset-dir", "--dataset_dir", "dataset_dir", type=_FOLDER, required=True, help="Clean images IMAGEID.png.")
@click.option(
    "--dataset-metadata",
    "--dataset_metadata",
    "dataset_metadata",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Dataset CSV with ImageId, TrueLabel, TargetClass (official columns).",
)
@click.option(
    "--intermediate-results-dir",
    "--intermediate_results_dir",
    "intermediate_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Work folder: logs, outputs, the pool. Reuse it to resume: finished pieces are skipped.",
)
@click.option("--output-dir", "--output_dir", "output_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Where the score files, results.json and report.html go.")
@click.option("--epsilon", type=EvaluationEpsilonType(), default=16, show_default=True, help="MAX_EPSILON, or 'cycle' for 4/8/12/16 per batch of 100.")
@click.option("--save-all-classification/--nosave-all-classification", "--save_all_classification/--nosave_all_classification", default=False, help="Also write all_classification.csv.")
@click.option(
    "--rules",
    type=click.Choice(["final", "dev"]),
    default="final",
    show_default=True,
    help="final: the final round's scoring (only complete attacks score defenses and vice versa, only IMAGEID.png "
    "counts) and its result files as well; dev: the development tool's.",
)
@click.option("--runner", type=click.Choice(["local", "docker"]), default="local", show_default=True, help="local: run entry points directly; docker: the organisers' docker run.")
@click.option("--gpu/--nogpu", default=False, help="docker: use container_gpu with the NVIDIA runtime.")
@click.option("--offline", is_flag=True, help="local: cut the network of each run (unshare), as --network=none does.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=BATCH_TIME_LIMIT_S, show_default=True, help="Seconds per piece (a batch of 100 images); the run is then killed.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Pieces run at once [default: number of cores].")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="ray: submit the pieces to a Ray cluster (shared file system).")
@click.option("--address", default=None, help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local Ray instance.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def evaluate_command(
    attacks_dir: Path | None,
    targeted_attacks_dir: Path | None,
    defenses_dir: Path,
    dataset_dir: Path,
    dataset_metadata: Path,
    intermediate_dir: Path,
    output_dir: Path,
    epsilon: int | str,
    save_all_classification: bool,
    rules: str,
    runner: str,
    gpu: bool,
    offline: bool,
    time_limit: float,
    jobs: int | None,
    executor: str,
    address: str | None,
    quiet: bool,
) -> None:
    """Run every attack on the dataset and every defense on all adversarial images; score and report.

    Writes the development tool's accuracy_on_attacks.csv, accuracy_on_targeted_attacks.csv,
    hit_target_class.csv, defense_ranking.csv, attack_ranking.csv,
    targeted_attack_ranking.csv (and all_classification.csv), plus normalized_scores.csv,
    clean_accuracy.csv, results.json and report.html into OUTPUT_DIR; with --rules final (the
    default) also the final round's accuracy_matrix.csv, error_matrix.csv,
    hit_target_class_matrix.csv, *_results.csv and sorted_*_results.csv.

    Exit status: 0 done (warnings, such as a dataset CSV covering more images than the folder,
    are printed), 1 done but some submissions or pieces had problems (listed in the log and the
    report), 2 could not run.
    """
    if attacks_dir is None and targeted_attacks_dir is None:
        raise click.UsageError("give --attacks-dir, --targeted-attacks-dir or both")
    configure_logging("nips-adv evaluate", verbose=False)
    from ..evaluation.executors import ExecutorError
    from ..evaluation.pieces import RunSettings
    from ..evaluation.run import LOG_FILE, EvaluationError, evaluate
    from ..submission.runner import network_isolation_available

    if runner == "docker" and shutil.which("docker") is None:
        fail("nips-adv evaluate", "--runner docker: docker not found on PATH")
    if offline and runner == "local" and not network_isolation_available():
        fail("nips-adv evaluate", "--offline needs 'unshare --net --map-root-user' (user namespaces) on this machine")
    settings = RunSettings(runner_kind=runner, gpu=gpu, offline=offline, time_limit=time_limit)
    try:
        result = evaluate(
            attacks_dir=attacks_dir,
            targeted_attacks_dir=targeted_attacks_dir,
            defenses_dir=defenses_dir,
            dataset_dir=dataset_dir,
            dataset_metadata=dataset_metadata,
            intermediate_dir=intermediate_dir,
            output_dir=output_dir,
            epsilon=epsilon,
            save_all_classification=save_all_classification,
            rules=rules,
            settings=settings,
            executor=executor,
            jobs=jobs or os.cpu_count() or 1,
            address=address,
            progress=not quiet,
        )
    except (EvaluationError, ExecutorError) as error:
        fail("nips-adv evaluate", str(error))
    _print_summary(result, output_dir)
    for line in result.warnings:
        click.echo(f"nips-adv evaluate: warning: {line}", err=True)
    if not result.ok:
        click.echo(
            f"nips-adv evaluate: {len(result.problems)} problem(s); see {Path(intermediate_dir) / LOG_FILE} and {Path(output_dir) / 'report.html'}",
            err=True,
        )
        sys.exit(1)


def _print_summary(result, output_dir: Path) -> None:
    for key, title in (("defense", "Defenses"), ("attack", "Attacks"), ("targeted_attack", "Targeted attacks")):
        frame = result.scores.rankings[key]
        if frame.empty:
            continue
        click.echo(f"{title}:")
        for position, row in enumerate(frame.itertuples(index=False), start=1):
            click.echo(f"  {position:3d}. {row.Name:30s} {row.Score:8d}  {row.NormalizedScore:.4f}")
    click.echo(f"Results in {output_dir}")


@click.command(name="report", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("intermediate_dir", type=_FOLDER)
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default: the evaluation's output folder.")
@click.option("--rules", type=click.Choice(["final", "dev"]), default=None, help="Score by these rules  [default: the evaluation's].")
def report_command(intermediate_dir: Path, output_dir: Path | None, rules: str | None) -> None:
    """Rebuild report.html and results.json from an evaluation's INTERMEDIATE_DIR."""
    from ..evaluation.run import EvaluationError, finish

    try:
        result = finish(intermediate_dir, output_dir=output_dir, score_files=False, rules=rules)
    except EvaluationError as error:
        fail("nips-adv report", str(error))
    report = next(path for path in result.output_files if path.name == "report.html")
    click.echo(str(report))
