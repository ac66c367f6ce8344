"""Hook implementation of the built-in visionkit_data plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def visionkit_add_commands(app: typer.Typer) -> None:
    """The ``data`` group: ``check`` and ``convert``."""
    from visionkit_data.command import app as data

    app.add_typer(data, name="data")
