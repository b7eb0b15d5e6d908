"""``nips-adv evaluate`` (the organisers' run_attacks_and_defenses.py) and ``nips-adv report``."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..contract.constants import BATCH_TIME_LIMIT_S, COMPETITION_EPSILONS, DEFAULT_EPSILON, MAX_EPSILON
from ..evaluation.plan import EPSILON_CYCLE
from .common import (
    EXIT_SOME_FAILED,
    FOLDER,
    HELP_OPTIONS,
    INPUT_FILE,
    OUTPUT_FOLDER,
    Command,
    configure_logging,
    fail,
    failing_on,
    quiet_option,
    rules_option,
)

if TYPE_CHECKING:
    from ..evaluation.run import EvaluationResult


class EvaluationEpsilonType(click.ParamType):
    """An integer MAX_EPSILON 0..255, or ``cycle`` (4, 8, 12, 16 per batch of 100, as in the final round)."""

    name = f"EPS|{EPSILON_CYCLE}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == EPSILON_CYCLE:
            return EPSILON_CYCLE
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is neither an integer 0..{MAX_EPSILON} nor {EPSILON_CYCLE!r}", param, ctx)
        if not 0 <= number <= MAX_EPSILON:
            self.fail(f"{number} is outside 0..{MAX_EPSILON}", param, ctx)
        return number


def _organisers_option(name: str, dest: str | None = None, **settings: Any) -> Callable[[Command], Command]:
    """``--NAME-WITH-DASHES``, also spelt ``--NAME_WITH_UNDERSCORES`` as in the organisers' tool."""
    return click.option(f"--{name.replace('_', '-')}", f"--{name}", dest or name, **settings)


@click.command(name="evaluate", context_settings=HELP_OPTIONS)
@_organisers_option("attacks_dir", type=FOLDER, help="Non-targeted attacks: submission folders or archives.")
@_organisers_option("targeted_attacks_dir", type=FOLDER, help="Targeted attacks.")
@_organisers_option("defenses_dir", type=FOLDER, required=True, help="Defenses.")
@_organisers_option("dataset_dir", type=FOLDER, required=True, help="Clean images IMAGEID.png.")
@_organisers_option("dataset_metadata", type=INPUT_FILE, required=True, help="Dataset CSV with ImageId, TrueLabel, TargetClass (official columns).")
@_organisers_option(
    "intermediate_results_dir",
    "intermediate_dir",
    type=OUTPUT_FOLDER,
    required=True,
    help="Work folder: logs, outputs, the pool. Reuse it to resume: finished pieces are skipped.",
)
@_organisers_option("output_dir", type=OUTPUT_FOLDER, required=True, help="Where the score files, results.json and report.html go.")
@click.option(
    "--epsilon",
    type=EvaluationEpsilonType(),
    default=DEFAULT_EPSILON,
    show_default=True,
    help=f"MAX_EPSILON, or '{EPSILON_CYCLE}' for {'/'.join(map(str, COMPETITION_EPSILONS))} per batch of 100.",
)
@click.option("--save-all-classification/--nosave-all-classification", "--save_all_classification/--nosave_all_classification", default=False, help="Also write all_classification.csv.")
@rules_option("final")
@click.option("--runner", type=click.Choice(["local", "docker"]), default="local", show_default=True, help="local: run entry points directly; docker: the organisers' docker run.")
@click.option("--gpu/--nogpu", default=False, help="docker: use container_gpu, run with --runtime=nvidia as the final round did.")
@click.option("--offline", is_flag=True, help="local: cut the network of each run (unshare), as --network=none does.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=BATCH_TIME_LIMIT_S, show_default=True, help="Seconds per piece (a batch of 100 images); the run is then killed.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Pieces run at once [default: number of cores].")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="ray: submit the pieces to a Ray cluster (shared file system).")
@click.option("--address", default=None, help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local Ray instance.")
@quiet_option
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
    from ..evaluation.layout import LOG_FILE
    from ..evaluation.plan import RunSettings
    from ..evaluation.report import REPORT_FILE
    from ..evaluation.run import EvaluationError, Execution, evaluate
    from ..submission.runner import docker_available, docker_cpus_note, network_isolation_available

    if runner == "docker":
        if shutil.which("docker") is None:
            fail("nips-adv evaluate", "--runner docker: docker not found on PATH")
        if not docker_available():
            fail("nips-adv evaluate", "--runner docker: no Docker engine answers (`docker info` failed); start dockerd")
        cpus_note = docker_cpus_note()
        if cpus_note is not None:
            click.echo(f"nips-adv evaluate: note: {cpus_note}", err=True)
    if offline and runner == "local" and not network_isolation_available():
        fail("nips-adv evaluate", "--offline needs 'unshare --net --map-root-user' (user namespaces) on this machine")
    settings = RunSettings(runner_kind=runner, gpu=gpu, offline=offline, time_limit=time_limit)
    with failing_on("nips-adv evaluate", EvaluationError, ExecutorError, path=intermediate_dir):
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
            execution=Execution(executor=executor, jobs=jobs or os.cpu_count() or 1, address=address, progress=not quiet),
        )
    _print_summary(result, output_dir)
    for line in result.warnings:
        click.echo(f"nips-adv evaluate: warning: {line}", err=True)
    if not result.ok:
        click.echo(
            f"nips-adv evaluate: {len(result.problems)} problem(s); see {Path(intermediate_dir) / LOG_FILE} and {Path(output_dir) / REPORT_FILE}",
            err=True,
        )
        sys.exit(EXIT_SOME_FAILED)


def _print_summary(result: EvaluationResult, output_dir: Path) -> None:
    for key, title in (("defense", "Defenses"), ("attack", "Attacks"), ("targeted_attack", "Targeted attacks")):
        frame = result.scores.rankings[key]
        if frame.empty:
            continue
        click.echo(f"{title}:")
        for position, row in enumerate(frame.itertuples(index=False), start=1):
            click.echo(f"  {position:3d}. {row.Name:30s} {row.Score:8d}  {row.NormalizedScore:.4f}")
    click.echo(f"Results in {output_dir}")


@click.command(name="report", context_settings=HELP_OPTIONS)
@click.argument("intermediate_dir", type=FOLDER)
@click.option("--output-dir", type=OUTPUT_FOLDER, default=None, help="Default: the evaluation's output folder.")
@rules_option(None)
def report_command(intermediate_dir: Path, output_dir: Path | None, rules: str | None) -> None:
    """Rebuild report.html and results.json from an evaluation's INTERMEDIATE_DIR."""
    from ..evaluation.report import REPORT_FILE
    from ..evaluation.run import EvaluationError, finish

    with failing_on("nips-adv report", EvaluationError, path=output_dir or intermediate_dir):
        result = finish(intermediate_dir, output_dir=output_dir, score_files=False, rules=rules)
    click.echo(str(next(path for path in result.output_files if path.name == REPORT_FILE)))
