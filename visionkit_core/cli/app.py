"""The root Typer app: global options, and the command groups joined with ``add_typer``."""

from __future__ import annotations

from typing import Annotated

import typer

from visionkit_core.plugin.manager import Plugins


def _version_callback(value: bool) -> None:
    if not value:
        return
    from visionkit_core import HOOKSPEC_VERSION, __version__
    from visionkit_core.plugin.manager import get_plugins

    typer.echo(f"visionkit {__version__} (hookspec {HOOKSPEC_VERSION})")
    for info in get_plugins().infos.values():
        tag = " (built-in)" if info.builtin else ""
        typer.echo(f"  {info.name}: {info.distribution} {info.version}{tag} [{info.status}]")
    raise typer.Exit()


def build_app(plugins: Plugins) -> typer.Typer:
    """Create the CLI with the built-in command groups and every plugin's commands."""
    from visionkit_core.cli import components, config_cmd, evaluate, plugins_cmd, predict, train

    app = typer.Typer(
        name="visionkit",
        help="Train computer-vision models with PyTorch Lightning, assembled from plugins.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_version_callback, is_eager=True, help="Show versions and exit."
            ),
        ] = False,
        strict_plugins: Annotated[
            bool, typer.Option("--strict-plugins", help="Fail if any plugin fails to load.")
        ] = False,
        no_plugin: Annotated[
            list[str] | None, typer.Option("--no-plugin", help="Do not load this plugin (repeatable).")
        ] = None,
    ) -> None:
        """visionkit: plugin-based computer-vision training on Lightning."""

    train.register(app)
    evaluate.register(app)
    predict.register(app)
    app.add_typer(config_cmd.app, name="config")
    app.add_typer(plugins_cmd.app, name="plugins")
    for group in components.groups():
        app.add_typer(group.app, name=group.name)
    plugins.add_commands(app)
    plugins.report_errors()
    return app
