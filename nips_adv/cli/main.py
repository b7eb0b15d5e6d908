"""``nips-adv``: the umbrella command. Subcommands are imported only when used, so help stays fast."""

from __future__ import annotations

import importlib

import click

from .. import __version__
from .common import HELP_OPTIONS

# name -> ("module:attribute" of a click command, its one-line summary for `nips-adv --help`); each
# command lives in its own module under nips_adv.cli and is imported only when run or asked for help.
SUBCOMMANDS = {
    "bench": ("nips_adv.cli.bench:bench_command", "Image-gradients/s per model and precision on this machine."),
    "demo": ("nips_adv.cli.demo:demo_command", "The three tools on five bundled photos; a grid and a page."),
    "download": ("nips_adv.cli.download:download_group", "The dev/final datasets and the organisers' checkpoints."),
    "evaluate": ("nips_adv.cli.evaluate:evaluate_command", "Every attack against every defense, the final round's way."),
    "models": ("nips_adv.cli.models:models_command", "The models --model accepts, and where their weights are."),
    "package": ("nips_adv.cli.submission:package_command", "Build a submission archive (attack, targeted, defense)."),
    "report": ("nips_adv.cli.evaluate:report_command", "Rebuild report.html and results.json of an evaluation."),
    "score": ("nips_adv.cli.score:score_command", "Classify a folder of PNGs and score it against a CSV."),
    "train-denoiser": ("nips_adv.cli.train_denoiser:train_denoiser_command", "Train the defense's denoiser (HGD/LGD)."),
    "validate": ("nips_adv.cli.submission:validate_command", "Check an archive as the organisers do, then run it."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module_name, attribute = SUBCOMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings=HELP_OPTIONS)
@click.version_option(__version__, prog_name="nips-adv")
def main() -> None:
    """nips_adv: tools around the NIPS 2017 adversarial competition.

    The competition entry points are separate commands: nips-attack, nips-targeted-attack,
    nips-defense. This command packages, validates, evaluates, downloads and benchmarks.
    """
