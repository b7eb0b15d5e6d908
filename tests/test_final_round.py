"""Issue 15: packaging from an installed wheel, figures that were measured, the organisers' archive names."""

from __future__ import annotations

import ast
import importlib.resources
import sys
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

import nips_adv
from nips_adv.cli.submission import package_command

PACKAGE = Path(nips_adv.__file__).resolve().parent
ROOT = PACKAGE.parent


def test_templates_are_package_data() -> None:
    """What `nips-adv package` reads ships inside the package, and pyproject puts it into the wheel."""
    template = importlib.resources.files("nips_adv.submission") / "templates" / "entry_point.sh"
    assert Path(str(template)).is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["nips_adv"]
    assert "submission/templates/*" in package_data


def test_no_module_reaches_outside_the_package() -> None:
    """No `parents[N]`/`parent.parent` walk, no `../shared`: an installed wheel has no source tree around it."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
                offenders.append(f"{path}:{node.lineno}: parents[...]")
            if isinstance(node, ast.Attribute) and node.attr == "parent" and isinstance(node.value, ast.Attribute) and node.value.attr == "parent":
                offenders.append(f"{path}:{node.lineno}: .parent.parent")
        if "shared" in text and '"shared"' in text:
            offenders.append(f"{path}: names the shared folder")
    assert offenders == []


def test_bench_prints_no_peer_figure_it_did_not_measure(monkeypatch: pytest.MonkeyPatch) -> None:
    from nips_adv.apps import bench

    monkeypatch.setitem(sys.modules, "cleverhans", None)  # not installed
    assert bench.cleverhans_mi_fgsm_throughput() is None
    # No constant stands in for the peer any more.
    assert not [name for name, value in vars(bench).items() if "CLEVERHANS" in name.upper() and isinstance(value, (int, float))]
    source = (PACKAGE / "cli" / "bench.py").read_text()
    assert "peer is not None" in source
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(requirement.startswith("cleverhans") for requirement in extras["peers"])


def test_pyproject_license_is_spdx() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_package_refuses_tgz_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(package_command, ["defense", "--model", "efficientnet_lite0", "-o", str(tmp_path / "x.tgz")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and ".tar.gz" in lines[0] and "tgz" in lines[0]
    assert not list(tmp_path.iterdir())


def test_package_warns_about_the_unpullable_default_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The organisers `docker pull` container_gpu: a local tag must not be written silently."""
    from nips_adv.submission import package as package_module

    written = {}

    def fake_package(submission_type, output, **options):
        written.update(options)
        raise package_module.SubmissionError("stop here")

    monkeypatch.setattr(package_module, "package_submission", fake_package)
    result = CliRunner().invoke(package_command, ["defense", "-o", str(tmp_path / "x.zip")])
    assert written["image"] == package_module.DEFAULT_IMAGE
    warning = package_module.unpullable_image_warning("nips-adv:0.1.0", "nips-adv:0.1.0-gpu")
    assert "docker push USER/nips-adv:0.1.0-gpu" in warning and "--image USER/nips-adv:0.1.0" in warning
    assert result.exit_code == 2 and "stop here" in result.output


@pytest.mark.parametrize("size, pull_status, expected", [("1000", 0, None), (str(8 * 1024**3 + 1), 0, "over the organisers' limit"), ("", 1, "cannot be pulled")])
def test_validate_docker_pulls_and_sizes_container_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: str, pull_status: int, expected: str | None) -> None:
    """submission_validator_lib.py: `docker pull IMAGE`, `docker inspect --format={{.Size}} IMAGE`, at most 8 GiB."""
    import os

    from nips_adv.submission.validate import docker_image_problem

    calls = tmp_path / "calls.txt"
    docker = tmp_path / "docker"
    docker.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        f'if [ "$1" = pull ]; then echo "pull denied" >&2; exit {pull_status}; fi\n'
        f'if [ "$1" = inspect ] && [ -n "{size}" ]; then echo {size}; exit 0; fi\nexit 1\n'
    )
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    problem = docker_image_problem("me/img:gpu")
    assert calls.read_text().splitlines() == ["pull me/img:gpu", "inspect --format={{.Size}} me/img:gpu"]
    organisers_valid = size != "" and int(size) <= 8 * 1024**3
    assert (problem is None) == organisers_valid
    if expected:
        assert expected in problem
