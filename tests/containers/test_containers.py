"""The competitor's CI in ours: real images, real containers, the organisers' flags.

The README's CI recipe (package, then `validate --docker` on dev images with a score bar) for the
three default submissions; `evaluate` with the Docker and the local runner on the same dev images
giving the same predictions and score matrices; a hostile submission that tries the network,
writes outside its output folder and outlives its time limit.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DEV_IMAGES = 16
SAMPLES = ROOT / "submissions" / "samples"


def _run(console_env: dict[str, str], *arguments: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(list(arguments), capture_output=True, text=True, env=console_env, timeout=timeout)


def _containers_left() -> list[str]:
    listed = subprocess.run(["docker", "ps", "-a", "--filter", "name=nips-adv-", "--format", "{{.Names}}"], capture_output=True, text=True)
    return listed.stdout.split()


@pytest.fixture(scope="module")
def dev_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first DEV_IMAGES dev images by name and their dataset CSV rows."""
    folder = tmp_path_factory.mktemp("dev")
    images = folder / "images"
    images.mkdir()
    with open(shared_data / "dev_dataset.csv", newline="") as stream:
        rows = sorted(csv.DictReader(stream), key=lambda row: row["ImageId"])
    rows = [row for row in rows if (shared_data / "dev_images" / f"{row['ImageId']}.png").is_file()][:DEV_IMAGES]
    for row in rows:
        shutil.copyfile(shared_data / "dev_images" / f"{row['ImageId']}.png", images / f"{row['ImageId']}.png")
    dataset = folder / "dev_dataset.csv"
    with open(dataset, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return images, dataset


# The README's CI recipe, literally, on DEV_IMAGES images; the bars leave room for 16-image intervals.
RECIPE = {
    "attack": (["--model", "efficientnet_lite0,efficientnet_lite1"], ["--eps", "16", "--model", "efficientnet_lite2", "--max-accuracy", "0.5"]),
    "targeted_attack": (["--model", "efficientnet_lite0,efficientnet_lite1"], ["--eps", "16", "--model", "efficientnet_lite2", "--min-hit-rate", "0.125"]),
    "defense": (["--model", "efficientnet_lite1,efficientnet_lite2"], ["--min-accuracy", "0.8"]),
}


@pytest.mark.parametrize("kind", list(RECIPE))
def test_readme_ci_recipe_validates_each_default_submission_in_its_container(
    kind: str, project_image: str, dev_subset: tuple[Path, Path], console_env: dict[str, str], tmp_path: Path
) -> None:
    images, dataset = dev_subset
    archive = tmp_path / f"{kind}.zip"
    package_options, bars = RECIPE[kind]
    packaged = _run(console_env, "nips-adv", "package", kind, *package_options, "--image", project_image, "-o", str(archive))
    assert packaged.returncode == 0, packaged.stderr
    validated = _run(
        console_env, "nips-adv", "validate", str(archive), "--type", kind, "--docker", "--seed", "0",
        "--images", str(images), "--dataset", str(dataset), *bars,
    )
    report = validated.stdout + validated.stderr
    print(report)
    assert validated.returncode == 0, report
    assert f"in Docker ({project_image})" in report and ": met" in report and f"{archive.name}: VALID" in report
    assert not _containers_left()


def _sample_folders(root: Path) -> dict[str, Path]:
    """Deterministic samples: fgsm, noop, random_noise, a pinned targeted I-FGSM, two plain defenses."""
    folders = {"attacks": root / "attacks", "targeted": root / "targeted", "defenses": root / "defenses"}
    for name in ("fgsm", "noop", "random_noise"):
        shutil.copytree(SAMPLES / "attacks" / name, folders["attacks"] / name)
    for name in ("defense_lite0", "defense_lite1"):
        shutil.copytree(SAMPLES / "defenses" / name, folders["defenses"] / name)
    pinned = folders["targeted"] / "targeted_i_fgsm"
    shutil.copytree(SAMPLES / "targeted_attacks" / "targeted_mi_fgsm", pinned)
    entry = pinned / "run_attack.sh"
    entry.write_text(
        "#!/bin/bash\nset -euo pipefail\nexec nips-targeted-attack \"$1\" \"$2\" \"$3\" --model efficientnet_lite0 "
        "--method i-fgsm:iterations=3 --time-budget off --quiet\n"
    )
    return folders


SCORE_FILES = ("all_classification.csv", "accuracy_matrix.csv", "error_matrix.csv", "hit_target_class_matrix.csv",
               "defense_ranking.csv", "attack_ranking.csv", "targeted_attack_ranking.csv")


def test_evaluate_in_docker_matches_local(project_image: str, dev_subset: tuple[Path, Path], console_env: dict[str, str], tmp_path: Path) -> None:
    images, dataset = dev_subset
    folders = _sample_folders(tmp_path / "submissions")
    outputs = {}
    for runner in ("docker", "local"):
        outputs[runner] = tmp_path / f"out-{runner}"
        done = _run(
            console_env, "nips-adv", "evaluate", "--attacks-dir", str(folders["attacks"]), "--targeted-attacks-dir", str(folders["targeted"]),
            "--defenses-dir", str(folders["defenses"]), "--dataset-dir", str(images), "--dataset-metadata", str(dataset),
            "--intermediate-results-dir", str(tmp_path / f"work-{runner}"), "--output-dir", str(outputs[runner]),
            "--runner", runner, "--save-all-classification", "--quiet",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert (outputs[runner] / "report.html").is_file()
    for name in SCORE_FILES:
        docker_rows = (outputs["docker"] / name).read_text().splitlines()
        assert docker_rows == (outputs["local"] / name).read_text().splitlines(), name
        assert len(docker_rows) > 1, name
    assert not _containers_left()


@pytest.fixture
def loopback_listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on the host's 127.0.0.1: a container on any network but `none`/bridge-less host mode could reach it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    reached: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            reached.append("connected")
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], reached
    stop.set()
    thread.join()
    server.close()


HOSTILE_ENTRY = """#!/bin/bash
# Tries the network, writes outside OUTPUT_DIR, then outlives its time limit with a daemon of its own.
ls /sys/class/net > "$2/interfaces.txt"
python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)" && echo reached > "$2/network.txt"
echo hostile > /code/{marker} 2>/dev/null
echo hostile > "$1/{marker}" 2>/dev/null
echo hostile > /tmp/{marker}
cp "$1"/*.png "$2"/
setsid sleep 100000 &
exec sleep 100000
"""


def test_hostile_submission_is_contained_and_killed(
    project_image: str, loopback_listener: tuple[int, list[str]], console_env: dict[str, str], tmp_path: Path
) -> None:
    port, reached = loopback_listener
    marker = f"hostile-{uuid.uuid4().hex[:8]}"
    source = tmp_path / "hostile"
    source.mkdir()
    (source / "metadata.json").write_text(
        f'{{"type": "attack", "container": "{project_image}", "container_gpu": "{project_image}", "entry_point": "run_attack.sh"}}'
    )
    entry = source / "run_attack.sh"
    entry.write_text(HOSTILE_ENTRY.format(port=port, marker=marker))
    entry.chmod(0o755)
    archive = _archive(source, tmp_path / "hostile.zip")
    done = _run(console_env, "nips-adv", "validate", str(archive), "--type", "attack", "--docker", "--num-images", "2",
                "--time-limit", "30", "--keep", "--seed", "0")
    report = done.stdout + done.stderr
    assert done.returncode == 1 and "exceeded the time limit of 30 s" in report, report
    work = Path(next(line.split("work folder kept: ")[1].strip() for line in report.splitlines() if "work folder kept: " in line))
    try:
        outputs = work / "output_images"
        assert (outputs / "interfaces.txt").read_text().split() == ["lo"]
        assert not (outputs / "network.txt").exists() and not reached
        assert not list(work.rglob(marker))
        assert not Path("/tmp", marker).exists() and "changed its input images" not in report
        assert len(list(outputs.glob("*.png"))) == 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert not _containers_left()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 100000" not in ps


def _archive(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in folder.iterdir():
            info = zipfile.ZipInfo(path.name)
            info.external_attr = (path.stat().st_mode & 0o777) << 16
            bundle.writestr(info, path.read_bytes())
    return archive


@pytest.mark.parametrize("missing_field", ["container", "container_gpu"])
def test_missing_image_is_invalid_and_named(missing_field: str, project_image: str, console_env: dict[str, str], tmp_path: Path) -> None:
    missing = f"nips-adv-missing-{uuid.uuid4().hex[:8]}:none"
    images = {"container": project_image, "container_gpu": project_image, missing_field: missing}
    shutil.copytree(SAMPLES / "attacks" / "noop", tmp_path / "noop")
    (tmp_path / "noop" / "metadata.json").write_text(
        f'{{"type": "attack", "container": "{images["container"]}", "container_gpu": "{images["container_gpu"]}", '
        '"entry_point": "run_attack.sh"}'
    )
    done = _run(console_env, "nips-adv", "validate", str(_archive(tmp_path / "noop", tmp_path / "noop.zip")), "--type", "attack",
                "--docker", "--num-images", "2")
    report = done.stdout + done.stderr
    assert done.returncode == 1 and "noop.zip: INVALID (1 error)" in report, report
    (error,) = [line for line in report.splitlines() if line.lstrip().startswith("ERROR:")]
    assert f"{missing_field} {missing}" in error and "Traceback" not in report
    assert not _containers_left()


def test_sigkilled_validate_leaves_no_container(project_image: str, console_env: dict[str, str], tmp_path: Path) -> None:
    """The keeper of a Docker run removes its container when the validator dies, even by SIGKILL."""
    import os
    import signal
    import time

    source = tmp_path / "sleeper"
    source.mkdir()
    (source / "metadata.json").write_text(
        f'{{"type": "attack", "container": "{project_image}", "container_gpu": "{project_image}", "entry_point": "run_attack.sh"}}'
    )
    (source / "run_attack.sh").write_text("#!/bin/bash\nexec sleep 100000\n")
    (source / "run_attack.sh").chmod(0o755)
    archive = _archive(source, tmp_path / "sleeper.zip")
    validate = subprocess.Popen(
        ["nips-adv", "validate", str(archive), "--type", "attack", "--docker", "--num-images", "2"],
        env=console_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not _containers_left():
            assert time.monotonic() < deadline and validate.poll() is None, "no container was started"
            time.sleep(0.2)
        time.sleep(2)  # running, not only created
        os.kill(validate.pid, signal.SIGKILL)
        validate.wait()
        gone_by = time.monotonic() + 20
        while _containers_left() and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert not _containers_left()
    finally:
        validate.kill()
        validate.wait()
        for name in _containers_left():
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
