"""The hook implementation: adds the ``sweep`` command (its module imports neither torch nor optuna)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def visionkit_add_commands(app: typer.Typer) -> None:
    """``visionkit sweep``: Optuna (optionally on Ray) over ``visionkit train`` runs."""
    from visionkit_sweep.command import register

    register(app)
