"""``nips-adv``: the umbrella command. Subcommands are imported only when used, so help stays fast."""

from __future__ import annotations

import importlib

import click

from .. import __version__
from .common import HELP_OPTIONS

# name -> "module:attribute" of a click command; each lives in its own module under nips_adv.cli.
SUBCOMMANDS = {
    "bench": "nips_adv.cli.bench:bench_command",
    "demo": "nips_adv.cli.demo:demo_command",
    "download": "nips_adv.cli.download:download_group",
    "evaluate": "nips_adv.cli.evaluate:evaluate_command",
    "models": "nips_adv.cli.models:models_command",
    "package": "nips_adv.cli.submission:package_command",
    "report": "nips_adv.cli.evaluate:report_command",
    "score": "nips_adv.cli.score:score_command",
    "train-denoiser": "nips_adv.cli.train_denoiser:train_denoiser_command",
    "validate": "nips_adv.cli.submission:validate_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings=HELP_OPTIONS)
@click.version_option(__version__, prog_name="nips-adv")
def main() -> None:
    """nips_adv: tools around the NIPS 2017 adversarial competition.

    The competition entry points are separate commands: nips-attack, nips-targeted-attack,
    nips-defense. This command packages, validates, evaluates, downloads and benchmarks.
    """
