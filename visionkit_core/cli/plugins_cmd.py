"""``visionkit plugins list``: what is installed, what it registered, what failed.

``plugins check`` and ``plugins new`` join this group from the built-in visionkit_devtools plugin.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Inspect installed plugins, or start a new one.", no_args_is_help=True)


@app.command("list")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List every plugin: distribution, version, hooks, registered names, load errors."""
    from visionkit_core import HOOKSPEC_VERSION, __version__
    from visionkit_core.plugin.manager import get_plugins

    plugins = get_plugins()
    plugins.registry  # noqa: B018 - fills each plugin's "registered"
    infos = list(plugins.infos.values())
    if as_json:
        doc = {
            "visionkit_version": __version__,
            "hookspec_version": HOOKSPEC_VERSION,
            "plugins": [i.as_dict() for i in infos],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"visionkit {__version__}, hookspec {HOOKSPEC_VERSION}")
    for info in infos:
        tag = " [built-in]" if info.builtin else ""
        typer.echo(f"\n{info.name}{tag}  ({info.distribution} {info.version})  {info.status}")
        if info.hooks:
            typer.echo(f"  hooks:      {', '.join(info.hooks)}")
        if info.registered:
            typer.echo(f"  registered: {', '.join(info.registered)}")
        for err in info.errors:
            typer.echo(f"  error:      {err}")
