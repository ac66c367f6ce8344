"""Hook implementations of the built-in visionkit_serve plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def visionkit_add_commands(app: typer.Typer) -> None:
    """``visionkit serve``: its module imports only typer; the server's imports wait until it runs."""
    from visionkit_serve.command import serve

    app.command("serve")(serve)
