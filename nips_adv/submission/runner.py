"""Run a submission's entry point the way the organisers do: locally, or in its Docker image.

The organisers run, with the submission folder as working directory,
``./ENTRY INPUT_DIR OUTPUT_DIR MAX_EPSILON`` (attacks) or ``./ENTRY INPUT_DIR OUTPUT_FILE``
(defenses), and kill the container past the time limit. Here the local runner starts the entry
point in its own session and kills its whole process group past the limit; the Docker runner
uses the organisers' ``docker run`` command line and ``docker kill``s the named container.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..contract.constants import DOCKER_MEMORY_LIMIT
from .metadata import SubmissionMetadata

RUNNER_KINDS = ("local", "docker")
CONTAINER_CODE_DIR = "/code"
CONTAINER_INPUT_DIR = "/input_images"
CONTAINER_OUTPUT_DIR = "/output_images"
CONTAINER_OUTPUT_DATA_DIR = "/output_data"
TERMINATE_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when a run is stopped at its time limit."""


class RunnerError(Exception):
    """The run could not be attempted at all (no Docker engine, no such runner); not the submission's fault."""


@dataclass(frozen=True)
class Runner:
    """How to run entry points: ``kind`` ``"local"`` (directly) or ``"docker"`` (the metadata's image).

    ``gpu`` picks ``container_gpu`` and the NVIDIA runtime (``--gpus all``) for Docker runs.
    Docker runs never have a network; local ones only with ``offline`` (see network_isolation_available).
    """

    kind: str = "local"
    gpu: bool = False
    offline: bool = False
    """Local runs only: cut the network (``unshare --net --map-root-user``), as ``--network=none`` does in Docker."""

    def __post_init__(self) -> None:
        if self.kind not in RUNNER_KINDS:
            raise ValueError(f"unknown runner {self.kind!r}; expected one of {', '.join(RUNNER_KINDS)}")


@dataclass
class RunResult:
    """What happened to one run. ``returncode`` is None when the run was killed or never started."""

    command: list[str]
    returncode: int | None
    timed_out: bool
    seconds: float
    stdout_path: Path
    stderr_path: Path
    start_error: str | None = field(default=None)
    """Why the entry point could not be started (e.g. a script without a ``#!`` line), else None."""

    @property
    def ok(self) -> bool:
        return self.start_error is None and not self.timed_out and self.returncode == 0

    def describe(self) -> str:
        """One line: how the run ended."""
        if self.start_error is not None:
            return f"could not start: {self.start_error}"
        if self.timed_out:
            return f"killed after the time limit ({self.seconds:.1f} s)"
        if self.returncode == 0:
            return f"exited 0 in {self.seconds:.1f} s"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode} after {self.seconds:.1f} s"
        return f"exited with status {self.returncode} after {self.seconds:.1f} s"

    def stderr_tail(self, lines: int = 10) -> list[str]:
        """The last ``lines`` lines the entry point wrote to stderr."""
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.rstrip().splitlines()[-lines:]


OFFLINE_PREFIX = ["unshare", "--net", "--map-root-user", "--"]
"""Runs a command in a new user and network namespace: only a loopback interface, which is down."""


def network_isolation_available() -> bool:
    """Whether local runs can be cut off the network (``unshare`` present and user namespaces allowed)."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run([*OFFLINE_PREFIX, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_available() -> bool:
    """Whether a Docker client is on PATH and its engine answers."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_attack_submission(
    submission_dir: Path,
    metadata: SubmissionMetadata,
    input_dir: Path,
    output_dir: Path,
    epsilon: int,
    *,
    time_limit: float,
    log_dir: Path,
    runner: Runner = Runner(),
) -> RunResult:
    """Run an attack (either kind) on ``input_dir`` (PNGs, plus target_class.csv if targeted) into ``output_dir``.

    ``epsilon`` is MAX_EPSILON in pixel units. stdout/stderr go to ``log_dir/stdout.log`` and
    ``log_dir/stderr.log``. The run is killed after ``time_limit`` seconds.
    """
    if runner.kind == "local":
        arguments = [str(Path(input_dir).resolve()), str(Path(output_dir).resolve()), str(int(epsilon))]
        return _run_local(submission_dir, metadata, arguments, time_limit=time_limit, log_dir=log_dir, offline=runner.offline)
    _make_writable_by_container(Path(output_dir))
    mounts = [(Path(input_dir), CONTAINER_INPUT_DIR, True), (Path(output_dir), CONTAINER_OUTPUT_DIR, False)]
    arguments = [CONTAINER_INPUT_DIR, CONTAINER_OUTPUT_DIR, str(int(epsilon))]
    return _run_docker(submission_dir, metadata, mounts, arguments, time_limit=time_limit, log_dir=log_dir, gpu=runner.gpu)


def run_defense_submission(
    submission_dir: Path,
    metadata: SubmissionMetadata,
    input_dir: Path,
    output_file: Path,
    *,
    time_limit: float,
    log_dir: Path,
    runner: Runner = Runner(),
) -> RunResult:
    """Run a defense on ``input_dir``; it writes ``FILENAME,LABEL`` lines to ``output_file``.

    In Docker the folder of ``output_file`` is mounted as ``/output_data``.
    """
    output_file = Path(output_file)
    if runner.kind == "local":
        arguments = [str(Path(input_dir).resolve()), str(output_file.resolve())]
        return _run_local(submission_dir, metadata, arguments, time_limit=time_limit, log_dir=log_dir, offline=runner.offline)
    _make_writable_by_container(output_file.parent)
    mounts = [(Path(input_dir), CONTAINER_INPUT_DIR, True), (output_file.parent, CONTAINER_OUTPUT_DATA_DIR, False)]
    arguments = [CONTAINER_INPUT_DIR, f"{CONTAINER_OUTPUT_DATA_DIR}/{output_file.name}"]
    return _run_docker(submission_dir, metadata, mounts, arguments, time_limit=time_limit, log_dir=log_dir, gpu=runner.gpu)


def local_environment() -> dict[str, str]:
    """The environment of a local run: ours, with this Python's scripts folder first on PATH.

    That folder holds ``nips-attack``/``nips-defense``, which the entry points call, as the
    Docker image has them on PATH.
    """
    environment = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    path = environment.get("PATH", "")
    if scripts not in path.split(os.pathsep):
        environment["PATH"] = f"{scripts}{os.pathsep}{path}" if path else scripts
    return environment


def docker_command(
    submission_dir: Path,
    metadata: SubmissionMetadata,
    mounts: list[tuple[Path, str, bool]],
    arguments: list[str],
    *,
    container_name: str,
    gpu: bool,
) -> list[str]:
    """The organisers' ``docker run`` command line (``mounts``: host folder, container folder, read-only)."""
    command = ["docker", "run", "--rm", "--name", container_name, "--network=none", f"-m={DOCKER_MEMORY_LIMIT}"]
    if gpu:
        command += ["--gpus", "all"]
    for host, container, read_only in mounts:
        command += ["-v", f"{Path(host).resolve()}:{container}{':ro' if read_only else ''}"]
    command += ["-v", f"{Path(submission_dir).resolve()}:{CONTAINER_CODE_DIR}", "-w", CONTAINER_CODE_DIR]
    command += [metadata.container_gpu if gpu else metadata.container, f"./{metadata.entry_point}", *arguments]
    return command


def _log_paths(log_dir: Path) -> tuple[Path, Path]:
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir / "stdout.log", log_dir / "stderr.log"


def _run_local(
    submission_dir: Path, metadata: SubmissionMetadata, arguments: list[str], *, time_limit: float, log_dir: Path, offline: bool
) -> RunResult:
    command = [*(OFFLINE_PREFIX if offline else []), f"./{metadata.entry_point}", *arguments]
    stdout_path, stderr_path = _log_paths(log_dir)
    started = time.monotonic()
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        try:
            process = subprocess.Popen(
                command,
                cwd=submission_dir,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=local_environment(),
                start_new_session=True,
            )
        except OSError as error:
            return RunResult(command, None, False, time.monotonic() - started, stdout_path, stderr_path, start_error=str(error))
        timed_out = False
        try:
            returncode: int | None = process.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            returncode = None
        finally:
            seconds = time.monotonic() - started
            # When the entry point ends, its container would stop: nothing it started outlives it.
            _kill_group(process, signal.SIGKILL)
            process.wait()
    return RunResult(command, returncode, timed_out, seconds, stdout_path, stderr_path)


def _kill_group(process: subprocess.Popen, signal_number: int) -> None:
    try:
        os.killpg(process.pid, signal_number)
    except (ProcessLookupError, PermissionError):
        pass


def _make_writable_by_container(folder: Path) -> None:
    # The image runs as a non-root user whose uid differs from ours; it must be able to write here.
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)


def _make_readable_by_container(folder: Path) -> None:
    """Let any user read ``folder``'s files and enter its folders (links are not followed)."""
    folder = Path(folder)
    folder.chmod(folder.stat().st_mode | 0o055)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o055)
        for name in files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o044)


def _run_docker(
    submission_dir: Path,
    metadata: SubmissionMetadata,
    mounts: list[tuple[Path, str, bool]],
    arguments: list[str],
    *,
    time_limit: float,
    log_dir: Path,
    gpu: bool,
) -> RunResult:
    if shutil.which("docker") is None:
        raise RunnerError("docker not found on PATH; install Docker or run without --docker")
    _make_readable_by_container(submission_dir)
    for host, _, read_only in mounts:
        if read_only:
            _make_readable_by_container(host)
    container_name = f"nips-adv-{uuid.uuid4().hex[:12]}"
    command = docker_command(submission_dir, metadata, mounts, arguments, container_name=container_name, gpu=gpu)
    stdout_path, stderr_path = _log_paths(log_dir)
    started = time.monotonic()
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        except OSError as error:
            raise RunnerError(f"cannot start docker: {error}") from None
        timed_out = False
        try:
            returncode: int | None = process.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            subprocess.run(["docker", "kill", container_name], capture_output=True, timeout=60, check=False)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            returncode = None
        seconds = time.monotonic() - started
    if returncode == DOCKER_ENGINE_FAILED:
        raise RunnerError(f"docker could not start the container (status 125): {_last_line(stderr_path)}")
    return RunResult(command, returncode, timed_out, seconds, stdout_path, stderr_path)


DOCKER_ENGINE_FAILED = 125
"""``docker run`` status when the engine itself failed (no such image, daemon down), before the entry point ran."""


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
