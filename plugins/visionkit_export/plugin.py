"""Hook implementation of the built-in visionkit_export plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def visionkit_add_commands(app: typer.Typer) -> None:
    """``visionkit export``: its module imports only typer; the exporters' imports wait until it runs."""
    from visionkit_export.command import export

    app.command("export")(export)
