"""metadata.json checks and the runner (local process groups, the organisers' docker command line)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from nips_adv.submission.metadata import SubmissionError, SubmissionMetadata, is_docker_image_name, read_metadata
from nips_adv.submission.runner import (
    Runner,
    RunnerError,
    docker_command,
    engine_cpu_count,
    run_attack_submission,
    run_defense_submission,
)

GOOD_METADATA = {
    "type": "attack",
    "container": "nips-adv:latest",
    "container_gpu": "nips-adv:latest-gpu",
    "entry_point": "run_attack.sh",
}


def write_submission(folder: Path, metadata: object, script: str | None = "#!/bin/sh\nexit 0\n", mode: int = 0o755) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    (folder / "metadata.json").write_text(text)
    entry = metadata.get("entry_point", "run_attack.sh") if isinstance(metadata, dict) else "run_attack.sh"
    if script is not None and isinstance(entry, str) and entry and "/" not in entry and ".." not in entry:
        (folder / entry).write_text(script)
        (folder / entry).chmod(mode)
    return folder


def test_read_good_metadata(tmp_path: Path) -> None:
    folder = write_submission(tmp_path / "sub", GOOD_METADATA)
    metadata, warnings = read_metadata(folder, expected_type="attack")
    assert metadata == SubmissionMetadata(**GOOD_METADATA)
    assert warnings == []
    assert json.loads(metadata.to_json()) == GOOD_METADATA


def test_metadata_warnings(tmp_path: Path) -> None:
    document = dict(GOOD_METADATA, entry_point="run.py", comment="hi")
    folder = write_submission(tmp_path / "sub", document, mode=0o744)
    _, warnings = read_metadata(folder)
    assert len(warnings) == 3
    assert "unknown field(s) ignored: comment" in warnings[0]
    assert "not executable by everyone" in warnings[1]
    assert "not a .sh script" in warnings[2]


class BadMetadata(NamedTuple):
    label: str
    document: object
    message: str
    expected_type: str | None = None
    mode: int = 0o755


BAD_METADATA = [
    BadMetadata("broken-json", '{"type": "attack",', "invalid JSON"),
    BadMetadata("not-object", "[1, 2]", "must hold a JSON object"),
    BadMetadata("missing-fields", {"type": "attack"}, "missing field(s) container, container_gpu, entry_point"),
    BadMetadata("empty-field", dict(GOOD_METADATA, container=""), "field 'container' must be a non-empty string"),
    BadMetadata("number-field", dict(GOOD_METADATA, entry_point=3), "field 'entry_point' must be a non-empty string, got 3"),
    BadMetadata("unknown-type", dict(GOOD_METADATA, type="attacker"), "unknown type 'attacker'"),
    BadMetadata("wrong-type", GOOD_METADATA, "type is 'attack' but the submission is for the 'defense' track", "defense"),
    BadMetadata("bad-image", dict(GOOD_METADATA, container="My Image"), "container 'My Image' is not a valid Docker image"),
    BadMetadata("missing-entry", dict(GOOD_METADATA, entry_point="sub/run.sh"), "entry point 'sub/run.sh' not found"),
    BadMetadata("escaping-entry", dict(GOOD_METADATA, entry_point="../run.sh"), "must be a path inside the submission folder"),
    BadMetadata("absolute-entry", dict(GOOD_METADATA, entry_point="/bin/sh"), "must be a path inside the submission folder"),
    BadMetadata("not-executable", GOOD_METADATA, "entry point is not executable", mode=0o644),
]


@pytest.mark.parametrize("case", BAD_METADATA, ids=lambda case: case.label)
def test_bad_metadata(tmp_path: Path, case: BadMetadata) -> None:
    folder = write_submission(tmp_path / "sub", case.document, mode=case.mode)
    with pytest.raises(SubmissionError, match=case.message.replace("(", r"\(").replace(")", r"\)")):
        read_metadata(folder, expected_type=case.expected_type)


def test_missing_metadata_and_entry_point_folder(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="metadata.json: missing"):
        read_metadata(tmp_path)
    folder = write_submission(tmp_path / "sub", dict(GOOD_METADATA, entry_point="bin"), script=None)
    (folder / "bin").mkdir()
    with pytest.raises(SubmissionError, match="'bin' is not a file"):
        read_metadata(folder)


def test_entry_point_link_leaving_folder(tmp_path: Path) -> None:
    folder = write_submission(tmp_path / "sub", dict(GOOD_METADATA, entry_point="run.sh"), script=None)
    (folder / "run.sh").symlink_to("/bin/true")
    with pytest.raises(SubmissionError, match="leads outside the submission folder"):
        read_metadata(folder)


@pytest.mark.parametrize(
    "name, valid",
    [
        ("nips-adv:latest", True),
        ("gcr.io/project/nips_adv:1.0-gpu", True),
        ("localhost:5000/a/b", True),
        ("tensorflow/tensorflow@sha256:" + "a" * 64, True),
        ("Upper:tag", False),
        ("two words", False),
        ("name:", False),
    ],
)
def test_docker_image_names(name: str, valid: bool) -> None:
    assert is_docker_image_name(name) is valid


METADATA = SubmissionMetadata(**GOOD_METADATA)
DEFENSE_METADATA = SubmissionMetadata("defense", "img:cpu", "img:gpu", "run_defense.sh")


def make_entry(folder: Path, body: str, name: str = "run_attack.sh") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("#!/bin/sh\n" + body)
    (folder / name).chmod(0o755)
    return folder


def test_local_attack_run_gets_organisers_arguments(tmp_path: Path) -> None:
    submission = make_entry(tmp_path / "sub", 'pwd; echo "$@"; echo oops >&2; touch "$2/done.png"\n')
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    result = run_attack_submission(
        submission, METADATA, tmp_path / "in", tmp_path / "out", 8, time_limit=30, log_dir=tmp_path / "logs"
    )
    assert result.ok and result.returncode == 0 and not result.timed_out
    assert result.command == ["./run_attack.sh", str(tmp_path / "in"), str(tmp_path / "out"), "8"]
    cwd, arguments = result.stdout_path.read_text().splitlines()
    assert Path(cwd) == submission.resolve()
    assert arguments == f"{tmp_path / 'in'} {tmp_path / 'out'} 8"
    assert result.stderr_tail() == ["oops"]
    assert (tmp_path / "out" / "done.png").exists()
    assert "exited 0" in result.describe()


def test_local_defense_run_and_exit_status(tmp_path: Path) -> None:
    submission = make_entry(tmp_path / "sub", 'echo "IMG0000.png,1" > "$2"; exit 3\n', name="run_defense.sh")
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    result = run_defense_submission(
        submission, DEFENSE_METADATA, tmp_path / "in", tmp_path / "out" / "result.csv", time_limit=30, log_dir=tmp_path / "logs"
    )
    assert not result.ok and result.returncode == 3
    assert result.command[1:] == [str(tmp_path / "in"), str(tmp_path / "out" / "result.csv")]
    assert (tmp_path / "out" / "result.csv").read_text() == "IMG0000.png,1\n"
    assert "exited with status 3" in result.describe()


def test_local_run_finds_console_tools_of_this_python(tmp_path: Path) -> None:
    submission = make_entry(tmp_path / "sub", 'command -v python\n')
    result = run_attack_submission(submission, METADATA, tmp_path, tmp_path, 4, time_limit=30, log_dir=tmp_path / "logs")
    assert result.ok
    assert Path(result.stdout_path.read_text().strip()).parent == Path(sys.executable).parent


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs, allowing the kernel a moment to finish a SIGKILL."""
    deadline = time.monotonic() + 3
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); check its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_time_limit_kills_the_whole_process_tree(tmp_path: Path) -> None:
    # The entry point starts a grandchild that ignores SIGTERM; both must be gone after the run.
    submission = make_entry(
        tmp_path / "sub",
        "sh -c 'trap \"\" TERM; echo $$ > child.pid; while true; do sleep 0.1; done' &\n"
        "echo $$ > entry.pid\nwhile true; do sleep 0.1; done\n",
    )
    started = time.monotonic()
    result = run_attack_submission(submission, METADATA, tmp_path, tmp_path, 4, time_limit=1.0, log_dir=tmp_path / "logs")
    assert result.timed_out and result.returncode is None and not result.ok
    assert 1.0 <= result.seconds < 15 and time.monotonic() - started < 15
    assert "killed after the time limit" in result.describe()
    for name in ("entry.pid", "child.pid"):
        pid = int((submission / name).read_text())
        assert not _alive(pid), f"{name} {pid} survived"


def test_background_process_does_not_outlive_entry_point(tmp_path: Path) -> None:
    submission = make_entry(tmp_path / "sub", "sh -c 'echo $$ > child.pid; exec sleep 60' &\nsleep 0.5\nexit 0\n")
    result = run_attack_submission(submission, METADATA, tmp_path, tmp_path, 4, time_limit=30, log_dir=tmp_path / "logs")
    assert result.ok
    assert not _alive(int((submission / "child.pid").read_text()))


def test_script_without_interpreter_line_cannot_start(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run_attack.sh").write_text("echo no shebang\n")
    (tmp_path / "sub" / "run_attack.sh").chmod(0o755)
    result = run_attack_submission(tmp_path / "sub", METADATA, tmp_path, tmp_path, 4, time_limit=30, log_dir=tmp_path / "logs")
    assert not result.ok and result.returncode is None
    assert "Exec format error" in (result.start_error or "")


def test_runner_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown runner 'podman'"):
        Runner("podman")


def test_docker_command_line_is_the_organisers(tmp_path: Path) -> None:
    command = docker_command(
        tmp_path / "sub",
        METADATA,
        [(tmp_path / "in", "/input_images", True), (tmp_path / "out", "/output_images", False)],
        ["/input_images", "/output_images", "16"],
        container_name="c1",
        gpu=False,
    )
    # worker.py's flags (its `docker run --detach`, split here into create + start so the clock starts with the container).
    assert command == [
        "docker", "create", "--name", "c1", "--network=none", "-m=24g", "--cpus=3.75",
        "-v", f"{tmp_path}/in:/input_images:ro", "-v", f"{tmp_path}/out:/output_images",
        "-v", f"{tmp_path}/sub:/code", "-w", "/code",
        "nips-adv:latest", "./run_attack.sh", "/input_images", "/output_images", "16",
    ]  # fmt: skip
    gpu_command = docker_command(tmp_path, METADATA, [], [], container_name="c2", gpu=True)
    assert gpu_command[:3] == ["docker", "create", "--runtime=nvidia"] and "--gpus" not in gpu_command
    assert "nips-adv:latest-gpu" in gpu_command


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ``docker`` on PATH that logs its arguments.

    ``create`` copies the folder mounted at /code to fake_bin/code_seen (with its modes), sleeps
    $FAKE_DOCKER_CREATE_SLEEP seconds and exits $FAKE_DOCKER_STATUS; ``start`` sleeps $FAKE_DOCKER_SLEEP seconds; ``kill`` stops it.
    """
    bin_dir = tmp_path / "fake_bin"
    bin_dir.mkdir()
    log = tmp_path / "docker_calls.txt"
    script = bin_dir / "docker"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n'
        'if [ "$1" = create ]; then for a in "$@"; do case "$a" in *:/code) '
        f'cp -rp "${{a%:/code}}" {bin_dir}/code_seen;; esac; done; sleep "${{FAKE_DOCKER_CREATE_SLEEP:-0}}"; '
        'exit "${FAKE_DOCKER_STATUS:-0}"; fi\n'
        f'if [ "$1" = start ]; then echo $$ > {bin_dir}/run.pid; sleep "${{FAKE_DOCKER_SLEEP:-0}}"; fi\n'
        f'if [ "$1" = kill ]; then pkill -P "$(cat {bin_dir}/run.pid)"; fi\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    engine_cpu_count.cache_clear()  # the fake engine reports no CPU count: the final round's 3.75 stands
    yield log
    engine_cpu_count.cache_clear()


def test_docker_defense_run_and_kill_past_limit(
    tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "sub" / "model").mkdir(parents=True, mode=0o700)
    (tmp_path / "sub" / "model" / "weights").write_text("w")
    (tmp_path / "sub" / "model" / "weights").chmod(0o600)
    monkeypatch.setenv("FAKE_DOCKER_SLEEP", "30")
    result = run_defense_submission(
        tmp_path / "sub",
        DEFENSE_METADATA,
        tmp_path / "in",
        tmp_path / "out" / "result.csv",
        time_limit=0.5,
        log_dir=tmp_path / "logs",
        runner=Runner("docker", gpu=True),
    )
    assert result.timed_out and result.seconds < 10
    image_call, create_call, start_call, *remove_calls = [
        line for line in fake_docker.read_text().splitlines() if not line.startswith("info ")
    ]
    assert image_call == "image inspect img:gpu"  # a missing image is named before any container is made
    name = result.command[result.command.index("--name") + 1]
    # The keeper removes the container at the limit (before and after ending the processes); the runner makes sure afterwards.
    assert start_call == f"start --attach {name}" and remove_calls == [f"rm -f {name}"] * 3
    assert create_call.startswith("create --runtime=nvidia ") and "--network=none -m=24g --cpus=3.75" in create_call
    assert create_call.endswith("-w /code img:gpu ./run_defense.sh /input_images /output_data/result.csv")
    assert f"-v {tmp_path}/out:/output_data" in create_call
    # A fresh copy of the submission is mounted, removed afterwards; the original is left as it was.
    mounted = create_call.split(" -v ")[-1].split(":/code")[0]
    assert mounted != str(tmp_path / "sub") and not Path(mounted).exists()
    seen = fake_docker.parent / "fake_bin" / "code_seen"
    assert (seen / "model" / "weights").read_text() == "w"
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777  # the image's non-root user writes here
    assert stat.S_IMODE((seen / "model").stat().st_mode) == 0o755  # ... and reads the submission copy
    assert stat.S_IMODE((seen / "model" / "weights").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "sub" / "model" / "weights").stat().st_mode) == 0o600


def test_docker_engine_failure_is_a_runner_error(tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_STATUS", "125")
    with pytest.raises(RunnerError, match="could not create or start the container \\(status 125\\)"):
        run_attack_submission(
            tmp_path, METADATA, tmp_path, tmp_path / "out", 4, time_limit=30, log_dir=tmp_path / "logs", runner=Runner("docker")
        )


KILLED_DOCKER_RUNNER = """
import sys
from pathlib import Path
from nips_adv.submission.metadata import SubmissionMetadata
from nips_adv.submission.runner import Runner, run_attack_submission
metadata = SubmissionMetadata(type="attack", container="img", container_gpu="img:gpu", entry_point="run_attack.sh")
folder = Path(sys.argv[1])
run_attack_submission(folder, metadata, folder, folder / "out", 4, time_limit=600, log_dir=folder / "logs", runner=Runner("docker"))
"""


def test_a_runner_killed_while_docker_creates_leaves_no_container(
    tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_CREATE_SLEEP", "3")
    runner = subprocess.Popen([sys.executable, "-c", KILLED_DOCKER_RUNNER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 30
        while not (fake_docker.is_file() and "create " in fake_docker.read_text()):
            assert time.monotonic() < deadline and runner.poll() is None, "docker create was never called"
            time.sleep(0.05)
        os.kill(runner.pid, signal.SIGKILL)
        calls = fake_docker.read_text().splitlines()
        name = next(line for line in calls if line.startswith("create ")).split("--name ")[1].split()[0]
        # The keeper removes what was being created, before and after ending the run's processes: should the
        # script have reached `docker start` meanwhile (a loaded machine), the last removal still follows it.
        while fake_docker.read_text().splitlines().count(f"rm -f {name}") < 2:
            assert time.monotonic() < deadline + 10, "the container was left behind"
            time.sleep(0.05)
        calls = fake_docker.read_text().splitlines()
        assert calls[-1] == f"rm -f {name}" and calls.index(f"rm -f {name}") > calls.index(next(c for c in calls if c.startswith("create ")))
    finally:
        runner.kill()
        runner.wait()


def test_docker_missing_is_a_runner_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RunnerError, match="docker not found"):
        run_attack_submission(
            tmp_path, METADATA, tmp_path, tmp_path / "out", 4, time_limit=30, log_dir=tmp_path / "logs", runner=Runner("docker")
        )


def test_offline_local_run_has_no_network(tmp_path: Path) -> None:
    from nips_adv.submission.runner import network_isolation_available

    if not network_isolation_available():
        pytest.skip("unshare cannot create a network namespace here")
    submission = make_entry(tmp_path / "sub", "cat /proc/net/dev\n")
    result = run_attack_submission(
        submission, METADATA, tmp_path, tmp_path, 4, time_limit=30, log_dir=tmp_path / "logs", runner=Runner(offline=True)
    )
    assert result.ok and result.command[:2] == ["unshare", "--net"]
    interfaces = [line.split(":")[0].strip() for line in result.stdout_path.read_text().splitlines()[2:]]
    assert interfaces == ["lo"]


@pytest.mark.parametrize("engine_cpus, expected, capped", [("2", 2.0, True), ("16", 3.75, False), ("", 3.75, False)])
def test_docker_cpus_is_the_final_rounds_share_capped_at_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_cpus: str, expected: float, capped: bool
) -> None:
    """An engine refuses --cpus above its CPU count: 3.75 on a 2-CPU host would fail every run."""
    from nips_adv.submission import runner as runner_module

    docker = tmp_path / "docker"
    answer = f"echo {engine_cpus}; exit 0" if engine_cpus else "exit 1"  # "": the engine does not answer
    docker.write_text(f'#!/bin/sh\nif [ "$1" = info ]; then {answer}; fi\nexit 1\n')
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    runner_module.engine_cpu_count.cache_clear()
    try:
        assert runner_module.docker_cpus() == expected
        note = runner_module.docker_cpus_note()
        assert (note == "--cpus=2, not the final round's 3.75: the Docker engine has 2 CPUs") if capped else note is None
        command = docker_command(tmp_path, METADATA, [], [], container_name="c3", gpu=False, cpus=runner_module.docker_cpus())
        assert f"--cpus={expected:g}" in command
    finally:
        runner_module.engine_cpu_count.cache_clear()
