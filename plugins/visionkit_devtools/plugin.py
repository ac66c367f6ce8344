"""Hook implementation of the built-in visionkit_devtools plugin: ``plugins check|new`` and ``tune``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def visionkit_add_commands(app: typer.Typer) -> None:
    """Add ``check`` and ``new`` to the ``plugins`` group and the ``tune`` group to the root app."""
    from visionkit_devtools import commands, tune

    group = next((g.typer_instance for g in app.registered_groups if g.name == "plugins"), None)
    if group is not None:
        group.command("check")(commands.check_plugins)
        group.command("new")(commands.new_plugin)
    app.add_typer(tune.app, name="tune")
