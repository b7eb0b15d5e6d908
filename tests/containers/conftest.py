"""The containers tier: a real Docker engine, the project's images built by `scripts/build_images.sh`.

The engine is started where none answers (scripts/docker_engine.sh: docker.io from apt as root) and
stopped at the end if this tier started it. Where no engine can be had, every test here skips with
the one line that says why.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / "scripts" / "docker_engine.sh"
BUILD_SCRIPT = ROOT / "scripts" / "build_images.sh"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.containers)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    started = subprocess.run([str(ENGINE_SCRIPT), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or ["scripts/docker_engine.sh start failed"])[-1]
        pytest.skip(f"no Docker engine can run here: {reason}")
    yield
    subprocess.run([str(ENGINE_SCRIPT), "stop"], capture_output=True, text=True)


@pytest.fixture(scope="session")
def project_image(docker_engine: None) -> str:
    """The CPU image and its GPU variant, built as `make images` builds them; the CPU image's name."""
    built = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    version = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version = "))
    return f"nips-adv:{version}"
