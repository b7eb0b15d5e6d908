"""``nips-adv models``: the registry, and where each model's checkpoint is looked for."""

from __future__ import annotations

import click

from ..models import get_model_spec, list_models


@click.command(name="models")
def models_command() -> None:
    """List the models the tools accept with --model."""
    for name in list_models():
        click.echo(f"{name:24} {get_model_spec(name).description}")
