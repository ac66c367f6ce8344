"""``visionkit plugins check`` and ``visionkit plugins new``: contract checks and new plugin skeletons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def check_plugins(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Plugins to check, or components of them (visionkit:multilabel); default: every plugin.",
            show_default=False,
        ),
    ] = None,
    smoke: Annotated[
        bool, typer.Option("--smoke/--no-smoke", help="Smoke-run backbones, datasets and tasks (default on).")
    ] = True,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Data folder or dataset name for the task and dataset smoke runs."),
    ] = None,
    skip: Annotated[
        list[str] | None,
        typer.Option(
            "--skip",
            metavar="PHASE",
            help="A smoke phase not to run, e.g. smoke:export-onnx (repeatable); reported as skip.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Check plugins against the contract: import every factory, check options, smoke-run each one.

    One line per check (ok | FAIL | skip, plugin, kind, name, what); exit 1 if any failed.
    """
    from visionkit_core.kit.checks.conformance import run_checks
    from visionkit_core.plugin.manager import get_plugins

    plugins = get_plugins()
    echo = None if as_json else (lambda result: typer.echo(result.line()))
    report = run_checks(plugins, names, smoke=smoke, data=data, on_result=echo, skip=skip or ())
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


def new_plugin(
    name: Annotated[str, typer.Argument(help="Plugin name, also its namespace, e.g. 'acme'.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Parent folder; the package goes into DIR/visionkit-NAME.")
    ] = Path("."),
) -> None:
    """Write a ready-to-install plugin package: pyproject with the entry point, the hooks, tests."""
    from visionkit_devtools.scaffold import plugin_names, write_plugin

    root = write_plugin(name, directory)
    names = plugin_names(name)
    typer.echo(f"Created {names.distribution} in {root}")
    typer.echo("Next:")
    typer.echo(f"  cd {root}")
    typer.echo('  pip install -e ".[test]"')
    typer.echo(f"  visionkit plugins list          # shows {names.name!r}")
    typer.echo(f"  visionkit plugins check {names.name}    # imports, option types, a tiny run of each")
    typer.echo(f"  visionkit train --task {names.name}:smooth-classifier --epochs 1")
    typer.echo("  pytest")
