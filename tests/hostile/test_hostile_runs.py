"""Runs that outlive their time limit: nothing an entry point starts survives its run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nips_adv.submission.metadata import SubmissionMetadata
from nips_adv.submission.process_tree import TAG_VARIABLE
from nips_adv.submission.runner import run_attack_submission

METADATA = SubmissionMetadata(type="attack", container="x", container_gpu="x", entry_point="run_attack.sh")

# A setsid'd daemon, a double-forked one (its parent exits at once) and one that ignores SIGTERM;
# each writes its pid and then sleeps far past any limit.
DAEMONS = """#!/bin/sh
setsid sh -c 'echo $$ > setsid.pid; exec sleep 1000' &
( sh -c 'echo $$ > double_fork.pid; exec sleep 1000' & ) &
( setsid sh -c 'trap "" TERM; echo $$ > stubborn.pid; while true; do sleep 1; done' & ) &
while [ ! -s setsid.pid ] || [ ! -s double_fork.pid ] || [ ! -s stubborn.pid ]; do sleep 0.05; done
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _tagged_processes(inside: Path) -> list[int]:
    """Living processes of any run whose working folder is under ``inside`` (this test's runs, not a
    neighbouring test's when tests run in parallel)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environment = Path(f"/proc/{entry}/environ").read_bytes()
                cwd = Path(os.readlink(f"/proc/{entry}/cwd"))
            except OSError:
                continue
            if f"{TAG_VARIABLE}=".encode() in environment and cwd.is_relative_to(inside) and _alive(int(entry)):
                found.append(int(entry))
    return found


@pytest.mark.parametrize("ending", ["exits", "times out"])
def test_no_daemon_outlives_the_run(tmp_path: Path, ending: str) -> None:
    submission = tmp_path / "sub"
    submission.mkdir()
    script = DAEMONS + ("exit 0\n" if ending == "exits" else "sleep 1000\n")
    (submission / "run_attack.sh").write_text(script)
    (submission / "run_attack.sh").chmod(0o755)
    result = run_attack_submission(
        submission, METADATA, tmp_path, tmp_path, 4, time_limit=2.0 if ending == "times out" else 60, log_dir=tmp_path / "logs"
    )
    assert result.timed_out == (ending == "times out") and result.ok == (ending == "exits"), result.describe()
    for name in ("setsid", "double_fork", "stubborn"):
        pid = int((submission / f"{name}.pid").read_text())
        assert not _alive(pid), f"the {name} daemon {pid} survived the run"
    assert _tagged_processes(tmp_path) == []
    assert result.seconds < 20


def test_a_signal_ending_the_entry_point_is_reported_as_such(tmp_path: Path) -> None:
    submission = tmp_path / "sub"
    submission.mkdir()
    (submission / "run_attack.sh").write_text("#!/bin/sh\nkill -9 $$\n")
    (submission / "run_attack.sh").chmod(0o755)
    started = time.monotonic()
    result = run_attack_submission(submission, METADATA, tmp_path, tmp_path, 4, time_limit=30, log_dir=tmp_path / "logs")
    assert result.returncode == -9 and "killed by signal 9" in result.describe()
    assert time.monotonic() - started < 10


RUNNER = """
import sys
from pathlib import Path
from nips_adv.submission.metadata import SubmissionMetadata
from nips_adv.submission.runner import run_attack_submission
metadata = SubmissionMetadata(type="attack", container="x", container_gpu="x", entry_point="run_attack.sh")
folder = Path(sys.argv[1])
run_attack_submission(folder / "sub", metadata, folder, folder, 4, time_limit=float(sys.argv[2]), log_dir=folder / "logs")
"""


@pytest.mark.parametrize("runner_fate, time_limit", [(signal.SIGKILL, 600.0), pytest.param(signal.SIGSTOP, 10.0, marks=pytest.mark.e2e)])
def test_a_dead_or_frozen_runner_does_not_keep_its_run_alive(tmp_path: Path, runner_fate: int, time_limit: float) -> None:
    """SIGKILL: the keeper sees the pipe that only the runner held close, and ends the run at once.

    SIGSTOP: the runner cannot act at the time limit; the keeper's own clock ends the run.
    """
    submission = tmp_path / "sub"
    submission.mkdir()
    (submission / "run_attack.sh").write_text(DAEMONS + "echo $$ > entry.pid\nsleep 1000\n")
    (submission / "run_attack.sh").chmod(0o755)
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path), str(time_limit)])
    deadline = time.monotonic() + 60
    while not (submission / "entry.pid").is_file() or not (submission / "entry.pid").read_text().strip():
        assert time.monotonic() < deadline and runner.poll() is None, "the entry point never started"
        time.sleep(0.05)
    os.kill(runner.pid, runner_fate)
    try:
        pids = {name: int((submission / f"{name}.pid").read_text()) for name in ("entry", "setsid", "double_fork", "stubborn")}
        # The keeper's slack (2 s) past the limit, SIGTERM, then SIGKILL after the 5 s grace for the one that ignores it.
        gone_by = time.monotonic() + (time_limit if runner_fate == signal.SIGSTOP else 0) + 12
        # The keeper itself carries the tag and ends a moment after the last process it kills.
        while (any(_alive(pid) for pid in pids.values()) or _tagged_processes(tmp_path)) and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not [name for name, pid in pids.items() if _alive(pid)], "processes outlived their runner"
        assert not _tagged_processes(tmp_path)
    finally:
        runner.kill()
        runner.wait()


LOCKED_RUNNER = """
import sys
from pathlib import Path
from nips_adv.evaluation.pieces import piece_lock
from nips_adv.submission.metadata import SubmissionMetadata
from nips_adv.submission.runner import run_attack_submission
metadata = SubmissionMetadata(type="attack", container="x", container_gpu="x", entry_point="run_attack.sh")
folder = Path(sys.argv[1])
with piece_lock(folder / "piece"):
    run_attack_submission(folder / "sub", metadata, folder, folder, 4, time_limit=600, log_dir=folder / "logs")
"""


@pytest.mark.e2e
def test_a_killed_evaluates_piece_stays_locked_until_its_run_is_gone(tmp_path: Path) -> None:
    """A resumed evaluate must not share a piece folder with the keeper of a SIGKILLed one."""
    import fcntl

    from nips_adv.evaluation.pieces import piece_lock

    submission = tmp_path / "sub"
    submission.mkdir()
    (submission / "run_attack.sh").write_text("#!/bin/sh\n( setsid sh -c 'trap \"\" TERM; echo $$ > stubborn.pid; while true; do sleep 1; done' & ) &\n"
                                              "echo $$ > entry.pid\nsleep 1000\n")
    (submission / "run_attack.sh").chmod(0o755)
    runner = subprocess.Popen([sys.executable, "-c", LOCKED_RUNNER, str(tmp_path)])
    deadline = time.monotonic() + 60
    while not all((submission / name).is_file() and (submission / name).read_text().strip() for name in ("entry.pid", "stubborn.pid")):
        assert time.monotonic() < deadline and runner.poll() is None, "the entry point never started"
        time.sleep(0.05)
    try:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        stubborn = int((submission / "stubborn.pid").read_text())
        lock = os.open(tmp_path / "piece.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):  # the keeper holds it while it ends the run (5 s grace for the stubborn one)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(lock)
        started = time.monotonic()
        with piece_lock(tmp_path / "piece"):
            assert not _alive(stubborn) and not _tagged_processes(tmp_path)
        assert time.monotonic() - started < 15
    finally:
        if runner.poll() is None:
            runner.kill()
