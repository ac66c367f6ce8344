"""``visionkit config``: print the resolved run configuration."""

from __future__ import annotations

from typing import Any

import typer

from visionkit_core.cli.options import config_from_options, with_train_options

app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)


@app.command("show")
@with_train_options
def show(**options: Any) -> None:
    """Print the resolved config as YAML (feed it back with --config to reproduce it)."""
    config = config_from_options(options)
    from visionkit_core.plugin.manager import get_plugins
    from visionkit_core.run.resolve import validate_components

    validate_components(config, get_plugins())
    typer.echo(config.to_yaml(), nl=False)
