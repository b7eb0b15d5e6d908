"""The submission validator: the organisers' checks, a trial run as they would do it, and more.

Steps (each failure is a finding naming the file or member):
1. extract the archive safely (kind by extension, size limits, no member outside the folder);
2. find the submission folder (top level or one folder) and check ``metadata.json``;
3. generate random 299x299 images ``IMG0000.png``... (and ``target_class.csv`` for targeted
   attacks) and an epsilon from {4, 8, 12, 16}, or take real dev images with their labels
   (``dev_check.py``: the dataset's TargetClass goes into ``target_class.csv``);
4. run the entry point as the organisers do, killed past the time limit;
5. check the outputs: every image present, PNG, 299x299 RGB, within epsilon (attacks); every
   image classified with a label 1..1000 (defenses); the inputs left untouched;
6. on dev images: the score (accuracy or target hit rate) against its bars (``--max-accuracy``...).
Everything happens inside one temporary folder, removed at the end unless ``keep``.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import random
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..contract.attack_outputs import check_attack_output
from ..contract.constants import (
    ATTACK_TYPES,
    BATCH_IMAGES,
    BATCH_TIME_LIMIT_S,
    COMPETITION_EPSILONS,
    IMAGE_SIZE,
    MAX_ARCHIVE_BYTES,
    MAX_UNPACKED_BYTES,
    NUM_LABELS,
    SUBMISSION_TYPES,
    TARGET_CLASS_FILE,
)
from ..contract.csv_files import ContractFileError, read_label_file, write_label_file
from ..contract.images import write_png
from .archives import ArchiveError, extract_archive, find_submission_root
from .dev_check import DevSet, Figure, Threshold, attack_figures, classify_outputs, defense_figures
from .metadata import SubmissionError, SubmissionMetadata, read_metadata
from .runner import (
    Runner,
    RunnerError,
    RunResult,
    docker_available,
    docker_cpus_note,
    image_problem,
    run_attack_submission,
    run_defense_submission,
)

VALID, INVALID, COULD_NOT_RUN = 0, 1, 2
"""Exit statuses of ``nips-adv validate``."""

DEFENSE_RESULT_FILE = "result.csv"
_PREFIXES = {"info": "- ", "warning": "WARNING: ", "error": "ERROR: "}
_SLOW_FRACTION = 0.8
_LISTED = 5


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``level`` is ``"error"``, ``"warning"`` or ``"info"``."""

    level: str
    message: str


@dataclass
class ValidationReport:
    """What the validator found. ``status`` is VALID, INVALID or COULD_NOT_RUN (the exit status)."""

    archive: Path
    submission_type: str
    findings: list[Finding] = field(default_factory=list)
    could_not_run: bool = False
    metadata: SubmissionMetadata | None = None
    epsilon: int | None = None
    seed: int | None = None
    num_images: int = 0
    run: RunResult | None = None
    work_dir: Path | None = None
    """The temporary folder, when kept."""
    strict: bool = False
    """Make errors of what the organisers' validator only warned about and fixed (see ``lenient``)."""
    figures: dict[str, Figure] = field(default_factory=dict)
    """Scores measured on dev images (``accuracy``, ``hit rate``), when the run was on them."""
    missed_thresholds: list[str] = field(default_factory=list)
    """The score bars missed (``--max-accuracy`` ...): each is also an error."""

    def lenient(self, message: str) -> None:
        """An output the organisers' validator accepted and their evaluation fixed: a warning, an error if ``strict``."""
        (self.error if self.strict else self.warning)(message)

    @property
    def errors(self) -> list[str]:
        return [finding.message for finding in self.findings if finding.level == "error"]

    @property
    def warnings(self) -> list[str]:
        return [finding.message for finding in self.findings if finding.level == "warning"]

    @property
    def status(self) -> int:
        if self.could_not_run:
            return COULD_NOT_RUN
        return INVALID if self.errors else VALID

    def error(self, message: str) -> None:
        self.findings.append(Finding("error", message))

    def warning(self, message: str) -> None:
        self.findings.append(Finding("warning", message))

    def info(self, message: str) -> None:
        self.findings.append(Finding("info", message))

    def lines(self) -> list[str]:
        """The report as text lines, ending with the verdict."""
        lines = [f"{self.archive}: {self.submission_type} submission"]
        lines += [f"  {_PREFIXES[finding.level]}{finding.message}" for finding in self.findings]
        other_errors = len(self.errors) - len(self.missed_thresholds)
        invalid = f"{other_errors} error{'s' if other_errors != 1 else ''}" if other_errors else ""
        if self.missed_thresholds:
            missed = f"score threshold missed: {', '.join(self.missed_thresholds)}"
            invalid = f"{invalid}; {missed}" if invalid else f"{missed}; the submission itself ran correctly"
        verdict = {
            VALID: "VALID",
            INVALID: f"INVALID ({invalid})",
            COULD_NOT_RUN: "COULD NOT RUN the check (not a verdict on the submission)",
        }[self.status]
        lines.append(f"{self.archive.name}: {verdict}")
        return lines


def validate_submission(
    archive: Path,
    *,
    submission_type: str,
    epsilon: int | None = None,
    seed: int | None = None,
    num_images: int = BATCH_IMAGES,
    time_limit: float = BATCH_TIME_LIMIT_S,
    runner: Runner = Runner(),
    keep: bool = False,
    max_archive_bytes: int = MAX_ARCHIVE_BYTES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    progress: Callable[[str], None] | None = None,
    strict: bool = False,
    dev_set: DevSet | None = None,
    thresholds: Sequence[Threshold] = (),
    scoring_model: str | Sequence | None = None,
) -> ValidationReport:
    """Validate ``archive`` as a ``submission_type`` submission; never raises for a bad submission.

    ``epsilon`` None draws one of COMPETITION_EPSILONS; ``seed`` None draws a seed (reported,
    so the run can be repeated). ``num_images`` random images (the organisers use 100) are
    given ``time_limit`` seconds. With ``keep`` the temporary folder stays and is reported.
    ``progress`` receives a line before each slow step. Outputs the organisers' validator
    accepted and their evaluation fixed (RGBA/grey/palette PNGs, pixels beyond eps, result rows
    without ``.png``, labels outside 1..1000) are warnings saying what they did, so the verdict
    is theirs; ``strict`` makes them errors.

    With ``dev_set`` the run is on its real images (``num_images`` is then its size) and scored:
    attacks by ``scoring_model`` (a model list or Members with checkpoints, for
    ``Classifier.create``) on the outputs, defenses by their own result. Each score is reported
    with its count and 95% Wilson interval; a missed ``thresholds`` bar is an error (INVALID,
    the verdict saying that the score, not the run, failed).
    """
    if submission_type not in SUBMISSION_TYPES:
        raise ValueError(f"unknown submission type {submission_type!r}; expected one of {', '.join(SUBMISSION_TYPES)}")
    if dev_set is not None:
        num_images = len(dev_set.images)
    report = ValidationReport(archive=Path(archive), submission_type=submission_type, num_images=num_images, strict=strict)
    report.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    work_dir = Path(tempfile.mkdtemp(prefix="nips_adv_validate_"))
    try:
        _validate_in(
            work_dir, report, epsilon, time_limit, runner, max_archive_bytes, max_unpacked_bytes, progress or (lambda _: None),
            dev_set, thresholds, scoring_model,
        )
    except RunnerError as error:
        report.could_not_run = True
        report.error(f"could not run the entry point: {error}")
    except RecursionError:
        report.error("the submission made the check recurse too deeply (a structure nested beyond reason)")
    except Exception as error:  # noqa: BLE001 (every archive gets a verdict, never a traceback)
        reason = f"{type(error).__name__}: {str(error)[:200]}"
        if isinstance(error, OSError) and error.errno in _OUR_ENVIRONMENT_ERRNOS:
            report.could_not_run = True
            report.error(f"the check could not go on on this machine: {reason}")
        else:
            report.error(f"the submission broke the check: {reason}")
    finally:
        if keep:
            report.work_dir = work_dir
            report.info(f"work folder kept: {work_dir}")
        else:
            _remove_work_dir(work_dir)
    return report


_OUR_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE)
"""OSErrors that say our machine, not the submission, stopped the check."""


def _remove_work_dir(work_dir: Path) -> None:
    # An entry point may have taken permissions away from what it wrote: give them back first.
    for parent, folders, _ in os.walk(work_dir):
        for name in folders:
            path = os.path.join(parent, name)
            try:
                if not os.path.islink(path):
                    os.chmod(path, stat.S_IRWXU)
            except OSError:
                pass
    shutil.rmtree(work_dir, ignore_errors=True)


def _validate_in(
    work_dir: Path,
    report: ValidationReport,
    epsilon: int | None,
    time_limit: float,
    runner: Runner,
    max_archive_bytes: int,
    max_unpacked_bytes: int,
    progress: Callable[[str], None],
    dev_set: DevSet | None = None,
    thresholds: Sequence[Threshold] = (),
    scoring_model: str | Sequence | None = None,
) -> None:
    progress(f"extracting {report.archive.name}")
    try:
        extracted = extract_archive(
            report.archive, work_dir / "extracted", max_archive_bytes=max_archive_bytes, max_unpacked_bytes=max_unpacked_bytes
        )
        submission_dir = find_submission_root(extracted)
    except ArchiveError as error:
        report.error(str(error))
        return
    report.info(f"extracted; submission folder: {submission_dir.relative_to(extracted).as_posix() or '(top level)'}")

    try:
        metadata, warnings = read_metadata(submission_dir, expected_type=report.submission_type)
    except SubmissionError as error:
        report.error(str(error).replace(str(work_dir / "extracted") + "/", ""))
        return
    report.metadata = metadata
    for warning in warnings:
        report.warning(warning.replace(str(work_dir / "extracted") + "/", ""))
    image = metadata.container_gpu if runner.gpu else metadata.container
    report.info(f"metadata.json: entry point {metadata.entry_point}, image {image}")
    if runner.kind == "docker":
        if not docker_available():
            raise RunnerError("no Docker engine answers (`docker info` failed); validate without --docker to run it directly")
        progress(f"pulling {metadata.container_gpu} (the organisers pull container_gpu and check its size)")
        problem = docker_image_problem(metadata.container_gpu)
        if problem is None and image != metadata.container_gpu:
            problem = image_problem(image, "container")
        if problem is not None:
            report.error(problem)
            return
        cpus_note = docker_cpus_note()
        if cpus_note is not None:
            report.info(cpus_note)

    rng = np.random.default_rng(report.seed)
    report.epsilon = int(epsilon) if epsilon is not None else int(rng.choice(COMPETITION_EPSILONS))
    input_dir = work_dir / "input_images"
    targeted = report.submission_type == "targeted_attack"
    if dev_set is None:
        clean = _write_inputs(input_dir, report.num_images, rng, targeted=targeted)
    else:
        clean = _write_dev_inputs(input_dir, dev_set, targeted=targeted)
    input_digest = _digest(input_dir)
    input_dir.chmod(0o555)  # the organisers mount it read-only
    where = f"in Docker ({image})" if runner.kind == "docker" else "locally" + (" without network" if runner.offline else "")
    detail = f", eps {report.epsilon}" if report.submission_type in ATTACK_TYPES else ""
    kind = "random" if dev_set is None else "dev (with labels)"
    report.info(
        f"trial run {where}: {report.num_images} {kind} {IMAGE_SIZE}x{IMAGE_SIZE} images{detail}, "
        f"seed {report.seed}, time limit {time_limit:g} s"
    )

    log_dir = work_dir / "logs"
    progress(f"running {metadata.entry_point} on {report.num_images} images (time limit {time_limit:g} s)")
    if report.submission_type in ATTACK_TYPES:
        output_dir = work_dir / "output_images"
        output_dir.mkdir()
        run = run_attack_submission(
            submission_dir, metadata, input_dir, output_dir, report.epsilon, time_limit=time_limit, log_dir=log_dir, runner=runner
        )
    else:
        output_file = work_dir / "output_data" / DEFENSE_RESULT_FILE
        output_file.parent.mkdir()
        run = run_defense_submission(
            submission_dir, metadata, input_dir, output_file, time_limit=time_limit, log_dir=log_dir, runner=runner
        )
    report.run = run
    _check_run(report, run, time_limit)
    if report.submission_type in ATTACK_TYPES:
        _check_attack_outputs(report, clean, output_dir)
    else:
        labels = _check_defense_output(report, list(clean), output_file)
    if dev_set is not None:
        if report.submission_type in ATTACK_TYPES:
            from ..models import CheckpointError, ModelListError
            from ..models.classifier import Classifier

            progress(f"classifying the outputs with {_model_text(scoring_model)}")
            try:
                classifier = Classifier.create(scoring_model or "efficientnet_lite0")
            except (CheckpointError, ModelListError) as error:
                report.could_not_run = True
                report.error(f"cannot load the scoring model: {error}")
                return
            with classifier:
                predictions = classify_outputs(classifier, clean, output_dir, report.epsilon)
            report.figures = attack_figures(predictions, dev_set, _model_text(scoring_model))
            if not targeted:
                del report.figures["hit rate"]
        else:
            report.figures = defense_figures(labels, dev_set)
        _check_thresholds(report, thresholds)
    if not input_dir.is_dir() or input_dir.is_symlink():
        report.error("the entry point removed or replaced its INPUT_DIR (the organisers mount it read-only)")
        return
    input_dir.chmod(0o755)
    if _digest(input_dir) != input_digest:
        report.error("the entry point changed its input images (the organisers mount them read-only)")


MAX_DOCKER_IMAGE_BYTES = 8 * 1024**3
"""The organisers' limit on the size of ``container_gpu`` (submission_validator_lib.py)."""


def docker_image_problem(image: str) -> str | None:
    """As the organisers' validator: ``docker pull IMAGE``, then its size from ``docker inspect``; None when within 8 GiB.

    Their validator ignored a failed pull and failed on the inspect that followed; the message
    here says which step failed and why.
    """
    pulled = subprocess.run(["docker", "pull", image], capture_output=True, text=True, check=False)
    inspected = subprocess.run(["docker", "inspect", "--format={{.Size}}", image], capture_output=True, text=True, check=False)
    try:
        size = int(inspected.stdout.strip())
    except ValueError:
        reason = (pulled.stderr or inspected.stderr).strip().splitlines()
        return (
            f"container_gpu {image}: cannot be pulled ({reason[-1] if reason else 'no size'}); the organisers pull it from a "
            "registry: push it there (docker push) and name the pushed image in metadata.json"
        )
    if size > MAX_DOCKER_IMAGE_BYTES:
        return f"container_gpu {image}: {size} bytes, over the organisers' limit of 8 GiB ({MAX_DOCKER_IMAGE_BYTES} bytes)"
    return None


def _write_inputs(folder: Path, count: int, rng: np.random.Generator, *, targeted: bool) -> dict[str, np.ndarray]:
    """``count`` random uint8 images ``IMG0000.png``... as the organisers' validator makes them."""
    folder.mkdir()
    images = {}
    for index in range(count):
        name = f"IMG{index:04d}.png"
        pixels = rng.integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        write_png(pixels, folder / name)
        (folder / name).chmod(0o644)  # readable by the image's non-root user too
        images[name] = pixels
    if targeted:
        write_label_file(folder / TARGET_CLASS_FILE, {name: int(rng.integers(1, NUM_LABELS + 1)) for name in images})
        (folder / TARGET_CLASS_FILE).chmod(0o644)
    return images


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode("utf-8", errors="surrogateescape"))
        if path.is_symlink() or not path.is_file():
            digest.update(b"<not a file>")
            continue
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _check_run(report: ValidationReport, run: RunResult, time_limit: float) -> None:
    if run.ok:
        report.info(f"entry point {run.describe()}")
        if run.seconds > _SLOW_FRACTION * time_limit:
            report.warning(f"the run took {run.seconds:.0f} s, over {_SLOW_FRACTION:.0%} of the {time_limit:g} s limit")
        return
    if run.timed_out:
        report.error(
            f"entry point exceeded the time limit of {time_limit:g} s for {report.num_images} images and was killed "
            "with its processes"
        )
    elif run.start_error is not None:
        hint = " (does it start with a #! line?)" if "Exec format" in run.start_error else ""
        report.error(f"entry point could not be started: {run.start_error}{hint}")
    else:
        report.error(f"entry point {run.describe()}")
    tail = run.stderr_tail()
    if tail:
        report.info("last lines of its stderr:\n" + "\n".join(f"      {line}" for line in tail))


def _listed(names: list[str]) -> str:
    return ", ".join(names[:_LISTED]) + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _check_attack_outputs(report: ValidationReport, clean: dict[str, np.ndarray], output_dir: Path) -> None:
    epsilon = report.epsilon
    assert epsilon is not None
    missing, unreadable, wrong_format, wrong_size, wrong_mode, over = [], [], [], [], [], []
    worst_name, worst = "", 0
    largest = 0
    unchanged = 0
    for name, pixels in clean.items():
        path = output_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        checked = check_attack_output(path, pixels, epsilon, wrong_size="refuse")
        for kind, message in checked.problems:
            {"unreadable": unreadable, "format": wrong_format, "size": wrong_size, "mode": wrong_mode}[kind].append(message)
        if checked.distance is None:
            continue
        distance = checked.distance
        largest = max(largest, distance)
        unchanged += distance == 0
        if distance > epsilon:
            over.append(name)
            if distance > worst:
                worst_name, worst = name, distance
    total = len(clean)
    if missing:
        report.error(f"{len(missing)} of {total} output images missing: {_listed(missing)}")
    for label, problems in (
        ("unreadable", unreadable),
        ("not PNG", wrong_format),
        (f"not {IMAGE_SIZE}x{IMAGE_SIZE} (the organisers would resize them)", wrong_size),
    ):
        if problems:
            report.error(f"{len(problems)} output image(s) {label}: {_listed(problems)}")
    if wrong_mode:
        report.lenient(f"{len(wrong_mode)} output image(s) not RGB (the organisers convert them with convert('RGB')): {_listed(wrong_mode)}")
    if over:
        report.lenient(
            f"{len(over)} output image(s) exceed eps {epsilon} (the organisers would clip them): {_listed(over)}; "
            f"worst {worst_name} by {worst - epsilon} (max |adv - clean| = {worst})"
        )
    written = total - len(missing)
    if written:
        report.info(f"{written} of {total} images written; largest change {largest} (eps {epsilon}); {unchanged} unchanged")
    extra = sorted(path.name for path in output_dir.iterdir() if path.name not in clean)
    if extra:
        report.warning(f"{len(extra)} unexpected file(s) in the output folder: {_listed(extra)}")


def _check_defense_output(report: ValidationReport, names: list[str], output_file: Path) -> dict[str, int]:
    """Check ``result.csv`` and return its labels by image name as the organisers read them (empty if unusable)."""
    if not output_file.is_file():
        report.error(f"{DEFENSE_RESULT_FILE} not written (the entry point's second argument is the file to write)")
        return {}
    try:
        result = read_label_file(output_file)
    except ContractFileError as error:
        report.error(str(error))
        return {}
    accepted = _organisers_rows(output_file)
    # Rows the organisers' reader took (any integer label) are not errors by their verdict.
    problems = [p for p in _strip_folder(result.problems, output_file) if report.strict or _problem_line(p) not in accepted]
    for problem in problems[:_LISTED]:
        report.error(problem[:300])
    if len(problems) > _LISTED:
        report.error(f"{DEFENSE_RESULT_FILE}: {len(problems) - _LISTED} more bad row(s) like these")
    labels = dict(result.labels)
    outside = sorted(name for name, label in accepted.values() if not 1 <= label <= NUM_LABELS)
    if outside and not report.strict:
        report.lenient(
            f"{DEFENSE_RESULT_FILE}: {len(outside)} row(s) with a label outside 1..{NUM_LABELS} (e.g. 0, the background class): "
            f"the organisers count them as classified, never correct: {_listed(outside)}"
        )
        labels.update({name: label for name, label in accepted.values() if not 1 <= label <= NUM_LABELS})
    bare = sorted(name for name in labels if not name.endswith(".png"))
    if bare:
        report.lenient(f"{DEFENSE_RESULT_FILE}: {len(bare)} name(s) without .png (the organisers add it): {_listed(bare)}")
        labels = {(name if name.endswith(".png") else f"{name}.png"): label for name, label in labels.items()}
    result.labels = labels
    missing = [name for name in names if name not in result.labels]
    if missing:
        report.error(f"{DEFENSE_RESULT_FILE}: {len(missing)} of {len(names)} images not classified: {_listed(missing)}")
    extra = sorted(set(result.labels) - set(names))
    if extra:
        report.warning(f"{DEFENSE_RESULT_FILE}: {len(extra)} row(s) for unknown images: {_listed(extra)}")
    classified = len(names) - len(missing)
    if classified:
        distinct = len({result.labels[name] for name in names if name in result.labels})
        report.info(f"{classified} of {len(names)} images classified ({distinct} distinct label{'s' if distinct != 1 else ''})")
    return result.labels


def _model_text(model: str | Sequence | None) -> str:
    if model is None:
        return "efficientnet_lite0"
    if isinstance(model, str):
        return model
    return ",".join(member.model if member.weight == 1 else f"{member.model}:{member.weight!r}" for member in model)


def _write_dev_inputs(folder: Path, dev_set: DevSet, *, targeted: bool) -> dict[str, np.ndarray]:
    """The dev images under their own names (``IMAGEID.png``) and, for targeted attacks, their TargetClass."""
    folder.mkdir()
    for name, pixels in dev_set.images.items():
        write_png(pixels, folder / name)
        (folder / name).chmod(0o644)
    if targeted:
        write_label_file(folder / TARGET_CLASS_FILE, dev_set.target_classes())
        (folder / TARGET_CLASS_FILE).chmod(0o644)
    return dict(dev_set.images)


def _check_thresholds(report: ValidationReport, thresholds: Sequence[Threshold]) -> None:
    """One line per figure; a missed bar is an error naming the figure, its interval and the bar."""
    bars = {threshold.metric: threshold for threshold in thresholds}
    for metric, figure in report.figures.items():
        threshold = bars.get(metric)
        if threshold is None:
            report.info(figure.text())
        elif figure.count and threshold.met_by(figure.value):
            report.info(f"{figure.text()}; {threshold.flag} {threshold.value:g}: met")
        else:
            report.missed_thresholds.append(f"{threshold.flag} {threshold.value:g}")
            report.error(f"SCORE THRESHOLD MISSED: {figure.text()}; {threshold.flag} {threshold.value:g}")


def _organisers_rows(output_file: Path) -> dict[int, tuple[str, int]]:
    """Line number -> (name, label) of the rows the organisers' load_defense_output takes: any integer label."""
    rows: dict[int, tuple[str, int]] = {}
    with open(output_file, encoding="utf-8", errors="replace", newline="") as stream:
        for line_number, row in enumerate(csv.reader(stream), start=1):
            try:
                rows[line_number] = (row[0].strip(), int(row[1]))
            except (IndexError, ValueError):
                continue
    return rows


def _problem_line(problem: str) -> int | None:
    match = re.search(r":(\d+): ", problem)
    return int(match.group(1)) if match else None


def _strip_folder(problems: list[str], output_file: Path) -> Iterator[str]:
    for problem in problems:
        yield problem.replace(str(output_file), DEFENSE_RESULT_FILE)
