"""The ``visionkit example-hello`` sub-command (a plain Typer command function)."""

from __future__ import annotations

from typing import Annotated

import typer

from visionkit_example import __version__


def hello(
    name: Annotated[str, typer.Option("--name", help="Who to greet.")] = "world",
) -> None:
    """Say hello from the example plugin (shows how a plugin adds a CLI command)."""
    typer.echo(f"Hello, {name}! (from visionkit-plugin-example {__version__})")
