"""Keeper of one run's process tree (Linux):
``python process_tree.py GRACE_S ERROR_FD WATCH_FD TIME_LIMIT_S CONTAINER COMMAND...``.

The runner starts every entry point through this small process, run as a script (stdlib only,
no package import, so it starts in tens of milliseconds): a local entry point as COMMAND, a
Docker run as ``docker start --attach CONTAINER``. It:

1. makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so every process the entry
   point starts stays its descendant, even one that calls ``setsid`` or forks twice to detach;
2. runs COMMAND and waits for it;
3. when COMMAND exits, when the runner sends SIGTERM (the time limit), when TIME_LIMIT_S has
   passed (0: none) or when the runner is gone (the pipe WATCH_FD reads end-of-file: the runner,
   which holds its only write end, exited or was SIGKILLed), removes CONTAINER (``docker rm -f``;
   ``-`` for none), signals every descendant (SIGTERM, then SIGKILL after GRACE_S) and reaps
   them, until none is left;
4. exits with COMMAND's status, or by COMMAND's signal when it was killed.

When COMMAND cannot be started (no ``#!`` line...), the reason goes to the pipe ERROR_FD.

Processes are found through ``/proc`` (parent links), and also by the run's tag: the runner
puts ``NIPS_ADV_RUN_TAG`` in the environment, and anything still carrying it is killed too (a
belt to the subreaper's braces, e.g. where ``prctl`` is refused). Nothing a submission starts
outlives its run.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
TAG_VARIABLE = "NIPS_ADV_RUN_TAG"


def make_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; False where the kernel refuses."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    # The command name (2nd field) is in parentheses and may hold spaces or ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 2 or fields[0] == b"Z":
        return None  # a zombie needs reaping, not a signal
    return int(fields[1])


def _carries_tag(pid: int, tag: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as stream:
            return tag in stream.read().split(b"\0")
    except OSError:
        return False


def run_processes(tag: str | None = None) -> set[int]:
    """Our living descendants, plus any process of this user whose environment carries ``tag``."""
    me = os.getpid()
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            parent = _parent_of(int(entry))
            if parent is not None:
                parents[int(entry)] = parent
    found: set[int] = set()
    frontier = {me}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    if tag:
        marker = f"{TAG_VARIABLE}={tag}".encode()
        found |= {pid for pid in parents if pid not in found and _carries_tag(pid, marker)}
    return found


def _signal_all(pids: set[int], signal_number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal_number)
        except (ProcessLookupError, PermissionError):
            pass


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reap_orphans(keep: int) -> None:
    """Reap the dead orphans handed to us, not ``keep`` (its status belongs to its Popen)."""
    me = str(os.getpid()).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == keep:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                fields = stream.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[0] == b"Z" and fields[1] == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def kill_tagged(tag: str) -> None:
    """SIGKILL every process whose environment carries the run's ``tag`` (the runner's last resort)."""
    marker = f"{TAG_VARIABLE}={tag}".encode()
    for _ in range(10):
        pids = {int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _carries_tag(int(entry), marker)}
        if not pids:
            return
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.01)


def end_all(grace_s: float, tag: str | None) -> None:
    """SIGTERM every process of the run, SIGKILL what is left after ``grace_s``, reap them all."""
    pids = run_processes(tag)
    if pids:
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            _reap()
            if not run_processes(tag):
                break
            time.sleep(0.05)
    # A process may fork while we kill: repeat until nothing is left (each round kills what it sees).
    for _ in range(100):
        pids = run_processes(tag)
        if not pids:
            break
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.01)
        _reap()
    _reap()


def runner_gone(watch_fd: int) -> bool:
    """Whether the pipe's write end is closed everywhere: the runner that held it has ended."""
    if watch_fd < 0:
        return False
    readable, _, _ = select.select([watch_fd], [], [], 0)
    return bool(readable) and os.read(watch_fd, 1) == b""


def remove_container(name: str) -> None:
    """``docker rm -f NAME``: the container stops at once and nothing of it is left."""
    try:
        subprocess.run(["docker", "rm", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 7:
        print("usage: process_tree.py GRACE_S ERROR_FD WATCH_FD TIME_LIMIT_S CONTAINER COMMAND...", file=sys.stderr)
        return 2
    grace_s, error_fd, watch_fd, time_limit_s = float(argv[1]), int(argv[2]), int(argv[3]), float(argv[4])
    container = None if argv[5] == "-" else argv[5]
    tag = os.environ.get(TAG_VARIABLE)
    make_subreaper()
    stopping = False

    def on_term(signal_number, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    try:
        child = subprocess.Popen(argv[6:])
    except OSError as error:
        os.write(error_fd, str(error).encode("utf-8", errors="replace")[:4000])
        if container is not None:
            remove_container(container)
        return 127
    os.close(error_fd)
    # Poll rather than block, so SIGTERM (the time limit) and the runner's end are acted on at once.
    polls = 0
    while child.poll() is None and not stopping:
        time.sleep(0.05)
        polls += 1
        if runner_gone(watch_fd) or (time_limit_s > 0 and time.monotonic() - started > time_limit_s):
            stopping = True
        elif polls % 20 == 0:
            _reap_orphans(keep=child.pid)
    if container is not None:
        remove_container(container)
    end_all(grace_s, tag)
    if container is not None:
        remove_container(container)  # one the engine finished creating after the first removal
    returncode = child.wait()
    if stopping:
        return 128 + signal.SIGTERM
    if returncode < 0:
        # Die of the same signal, so the runner sees what killed the entry point.
        try:
            signal.signal(-returncode, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL and SIGSTOP keep their default anyway
        os.kill(os.getpid(), -returncode)
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
