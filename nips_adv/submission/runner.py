"""Run a submission's entry point the way the organisers do: locally, or in its Docker image.

The organisers run, with the submission folder as working directory,
``./ENTRY INPUT_DIR OUTPUT_DIR MAX_EPSILON`` (attacks) or ``./ENTRY INPUT_DIR OUTPUT_FILE``
(defenses), and kill the container past the time limit. Here the local runner starts the entry
point under a keeper process (``process_tree.py``: a child subreaper that also tags the run's
environment), which ends every process the entry point started, daemons included, when it exits
or at the time limit; the Docker runner creates the container with the final round's flags on a
fresh copy of the submission folder, starts the clock when it starts the container, and
``docker kill``s it at the limit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..contract.constants import DOCKER_MEMORY_LIMIT
from .metadata import SubmissionMetadata
from .process_tree import TAG_VARIABLE, kill_tagged

PROCESS_TREE_SCRIPT = Path(__file__).with_name("process_tree.py")

RUNNER_KINDS = ("local", "docker")
CONTAINER_CODE_DIR = "/code"
DOCKER_CPUS = 3.75
"""The final round's CPU share per container (worker.py); the development validator set none."""
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

    ``gpu`` picks ``container_gpu`` and the NVIDIA runtime (``--runtime=nvidia``) for Docker runs.
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

    def stderr_tail(self, lines: int = 10, *, max_line_chars: int = 300) -> list[str]:
        """The last ``lines`` lines the entry point wrote to stderr, each cut to ``max_line_chars``.

        Only the file's last ``lines x max_line_chars x 4`` bytes are read: a 20 MB stderr
        without a newline yields one cut line, not megabytes.
        """
        try:
            with open(self.stderr_path, "rb") as stream:
                size = stream.seek(0, os.SEEK_END)
                stream.seek(max(0, size - lines * max_line_chars * 4))
                text = stream.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        cut = []
        for line in text.rstrip().splitlines()[-lines:]:
            cut.append(line if len(line) <= max_line_chars else f"{line[:max_line_chars]} [... line cut]")
        return cut


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


@lru_cache(maxsize=1)
def engine_cpu_count() -> int | None:
    """The CPUs the Docker engine reports (``docker info``), None when it does not answer."""
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.NCPU}}"], capture_output=True, text=True, timeout=30)
        return int(done.stdout.strip()) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def docker_cpus() -> float:
    """``--cpus`` for a container: the final round's 3.75, capped at the engine's CPU count.

    The engine refuses a share above its CPU count (``Range of CPUs is from 0.01 to 2.00``).
    """
    available = engine_cpu_count()
    return min(DOCKER_CPUS, float(available)) if available else DOCKER_CPUS


def docker_cpus_note() -> str | None:
    """One line saying that ``--cpus`` is capped on this engine, None when the final round's share fits."""
    cpus = docker_cpus()
    if cpus >= DOCKER_CPUS:
        return None
    return f"--cpus={cpus:g}, not the final round's {DOCKER_CPUS:g}: the Docker engine has {cpus:g} CPUs"


def image_problem(image: str, field_name: str) -> str | None:
    """None when ``image`` is on this machine or can be pulled; else one line naming it (a submission's fault)."""
    if _image_present(image):
        return None
    try:
        pulled = subprocess.run(["docker", "pull", image], capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{field_name} {image}: not on this machine and `docker pull` failed ({error})"
    if pulled.returncode == 0 and _image_present(image):
        return None
    reason = pulled.stderr.strip().splitlines()
    return f"{field_name} {image}: not on this machine and cannot be pulled ({reason[-1] if reason else 'docker pull failed'})"


def _image_present(image: str) -> bool:
    try:
        return subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60).returncode == 0
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
    cpus: float = DOCKER_CPUS,
) -> list[str]:
    """The final round's container, as ``docker create`` (``mounts``: host folder, container folder, read-only).

    Its flags are the worker's (eval_infra/code/worker.py): the NVIDIA runtime for
    ``container_gpu``, ``--network=none -m=24g --cpus=3.75`` (``cpus``: docker_cpus() caps it
    at the engine's CPU count). The image is pulled before (``image_problem``), so ``docker create``,
    run under the keeper, takes a fraction of a second of the time limit; the worker's clock started
    once ``docker run --detach`` had returned.
    """
    command = ["docker", "create", *(["--runtime=nvidia"] if gpu else []), "--name", container_name]
    command += ["--network=none", f"-m={DOCKER_MEMORY_LIMIT}", f"--cpus={cpus:g}"]
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
    return _run_kept(command, submission_dir, local_environment(), stdout_path, stderr_path, time_limit=time_limit)


KEEPER_SLACK_S = 2.0
"""The keeper's own time limit is the run's plus this: it binds only where the runner could not act."""

KEEPER_HOLDS: ContextVar[tuple[int, ...]] = ContextVar("KEEPER_HOLDS", default=())
"""Open file descriptors the keeper inherits and holds until the whole run is over, e.g. an evaluation
piece's lock (``evaluation.pieces.piece_lock``): should this process die, the lock is still held until
the keeper has ended everything the run started."""


def _run_kept(
    command: list[str],
    cwd: Path,
    environment: dict[str, str],
    stdout_path: Path,
    stderr_path: Path,
    *,
    time_limit: float,
    container: str | None = None,
    report_command: list[str] | None = None,
) -> RunResult:
    """Run ``command`` under the keeper (process_tree.py), which ends it and all it started, or ``container``.

    The keeper watches a pipe whose only write end this process holds: if this process dies,
    even by SIGKILL, the keeper ends the run within a fraction of a second; it also keeps the
    time limit itself. ``report_command`` is the command line the result reports (default ``command``).
    """
    tag = uuid.uuid4().hex
    environment = {**environment, TAG_VARIABLE: tag}
    error_read, error_write = os.pipe()
    watch_read, watch_write = os.pipe()
    keeper = [
        sys.executable, str(PROCESS_TREE_SCRIPT), str(TERMINATE_GRACE_S), str(error_write), str(watch_read),
        f"{time_limit + KEEPER_SLACK_S:.3f}", container or "-", *command,
    ]  # fmt: skip
    reported = report_command or command
    started = time.monotonic()
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        try:
            process = subprocess.Popen(
                keeper,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=environment,
                start_new_session=True,
                pass_fds=(error_write, watch_read, *KEEPER_HOLDS.get()),
            )
        except OSError as error:
            os.close(error_read)
            os.close(watch_write)
            return RunResult(reported, None, False, time.monotonic() - started, stdout_path, stderr_path, start_error=str(error))
        finally:
            os.close(error_write)
            os.close(watch_read)
        timed_out = False
        try:
            returncode: int | None = process.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            # The keeper ends the whole tree (and the container): SIGTERM, SIGKILL after the grace period.
            _kill_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=TERMINATE_GRACE_S + 60)
            except subprocess.TimeoutExpired:
                pass
            returncode = None
        finally:
            seconds = time.monotonic() - started
            # Last resort, should the keeper itself have been killed: its group, then the tag.
            _kill_group(process, signal.SIGKILL)
            process.wait()
            os.close(watch_write)
            kill_tagged(tag)
    with os.fdopen(error_read, "rb") as errors:
        start_error = errors.read().decode("utf-8", errors="replace")
    if start_error:
        return RunResult(reported, None, False, seconds, stdout_path, stderr_path, start_error=start_error)
    return RunResult(reported, returncode, timed_out, seconds, stdout_path, stderr_path)


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
    stdout_path, stderr_path = _log_paths(log_dir)
    # A fresh copy per run, as the final round made one: nothing a run writes into its folder reaches the next.
    code_copy = Path(log_dir).resolve() / f"code-{uuid.uuid4().hex[:8]}"
    logs = str(Path(log_dir).resolve())
    shutil.copytree(
        submission_dir, code_copy, symlinks=True, ignore=lambda folder, names: [n for n in names if os.path.join(os.path.realpath(folder), n) == logs]
    )
    try:
        _make_readable_by_container(code_copy)
        for host, _, read_only in mounts:
            if read_only:
                _make_readable_by_container(host)
        container_name = f"nips-adv-{uuid.uuid4().hex[:12]}"
        image = metadata.container_gpu if gpu else metadata.container
        problem = image_problem(image, "container_gpu" if gpu else "container")
        if problem is not None:
            raise RunnerError(problem)
        command = docker_command(code_copy, metadata, mounts, arguments, container_name=container_name, gpu=gpu, cpus=docker_cpus())
        # Created by the keeper, not here: a runner killed at any moment leaves no container behind. The
        # clock starts before `docker create` (the image is local by now: a fraction of a second).
        run = _run_kept(
            ["sh", "-c", CREATE_THEN_START, "sh", container_name, *command], Path(log_dir), dict(os.environ), stdout_path,
            stderr_path, time_limit=time_limit, container=container_name, report_command=command,
        )
        subprocess.run(["docker", "rm", "-f", container_name], capture_output=True, timeout=60, check=False)
    finally:
        shutil.rmtree(code_copy, ignore_errors=True)
    if run.start_error is not None:
        raise RunnerError(f"cannot run docker start: {run.start_error}")
    if run.returncode == DOCKER_ENGINE_FAILED:
        raise RunnerError(f"docker could not create or start the container (status 125): {_last_line(stderr_path)}")
    return run


CREATE_THEN_START = 'name="$1"; shift; "$@" > /dev/null || exit; exec docker start --attach "$name"'
"""``sh -c`` script: ``docker create ...`` (the arguments after the container's name), then attach to it."""

DOCKER_ENGINE_FAILED = 125
"""``docker run`` status when the engine itself failed (no such image, daemon down), before the entry point ran."""


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
