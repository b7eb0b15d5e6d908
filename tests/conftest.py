"""Shared fixtures: the shared dev data (skipped when absent) and generated checkpoints."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
_SESSION_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """One cache folder for the whole run (converted weights land there once), removed at its end:
    tests never write to the user's ~/.cache. The tools run as subprocesses inherit it."""
    if not _SESSION_CACHE:
        _SESSION_CACHE.append(tempfile.mkdtemp(prefix="nips_adv-test-cache-"))
        os.environ["XDG_CACHE_HOME"] = _SESSION_CACHE[0]
        os.environ.pop("NIPS_ADV_CHECKPOINTS", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE.pop(), ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (200 real dev images and their CSV); the test is skipped where it is absent."""
    if not (SHARED_DATA / "dev_images").is_dir():
        pytest.skip(f"shared dev data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def console_env() -> dict[str, str]:
    """Environment for running the console scripts as subprocesses: the venv's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def inception_v3_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Inception V3 checkpoint with the official variable names (auxiliary head included)."""
    import functools

    from nips_adv.models import get_model_spec
    from nips_adv.models.inception_v3 import build_inception_v3_logits
    from nips_adv.models.random_weights import write_random_checkpoint

    prefix = tmp_path_factory.mktemp("inception_v3") / "inception_v3.ckpt"
    return write_random_checkpoint(
        get_model_spec("inception_v3"),
        prefix,
        seed=1,
        build=functools.partial(build_inception_v3_logits, with_aux_logits=True),
    )
