"""The umbrella command: every subcommand it names exists and explains itself."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from nips_adv.cli.main import SUBCOMMANDS, main


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_has_help(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_models_lists_the_registry() -> None:
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    assert "inception_v3" in result.output and "ens3_adv_inception_v3" in result.output


def test_help_gives_each_subcommand_a_whole_line() -> None:
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    listed = result.output.split("Commands:")[1].splitlines()[1:]
    assert len(listed) == len(SUBCOMMANDS)
    assert all(len(line) <= 80 and line.endswith(".") and not line.endswith("...") for line in listed), listed
