"""``visionkit models|datasets|tasks|loggers|callbacks list``: what the registry offers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

import typer


@dataclass
class Group:
    name: str
    kind: str
    app: typer.Typer


def _make(name: str, kind: str, noun: str) -> Group:
    app = typer.Typer(help=f"Inspect registered {noun}.", no_args_is_help=True)

    @app.command("list")
    def list_components(
        namespace: Annotated[
            str | None,
            typer.Option("--namespace", "-n", help="Only this namespace (lists dynamic ones in full)."),
        ] = None,
        pattern: Annotated[
            str | None, typer.Option("--filter", "-f", help="fnmatch pattern, e.g. 'convnext*'.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        from visionkit_core.plugin.manager import get_plugins

        registry = get_plugins().registry
        comps = registry.listing(kind, namespace, pattern)
        providers = [p for p in registry.providers(kind) if namespace is None]
        if as_json:
            named = [(c.qualname, c) for c in comps] + [(f"{p.namespace}:*", p) for p in providers]
            rows = [
                {
                    "name": n,
                    "plugin": c.origin.plugin,
                    "distribution": c.origin.distribution,
                    "description": c.description,
                }
                for n, c in named
            ]
            typer.echo(json.dumps(rows, indent=2))
            return
        width = max([len(c.qualname) for c in comps] + [len(p.namespace) + 2 for p in providers] + [8])
        for c in comps:
            desc = f"  {c.description}" if c.description and namespace is None else ""
            typer.echo(f"{c.qualname:<{width}}  [{c.origin.plugin}]{desc}")
        for p in providers:
            typer.echo(
                f"{p.namespace + ':*':<{width}}  [{p.origin.plugin}]  {p.description} "
                f"(list with --namespace {p.namespace})"
            )
        if not comps and not providers:
            typer.echo(f"no {noun} match", err=True)

    list_components.__doc__ = (
        f"List {noun}: static names, and dynamic namespaces (expanded with --namespace)."
    )
    return Group(name, kind, app)


def groups() -> list[Group]:
    return [
        _make("models", "backbone", "backbones"),
        _make("datasets", "dataset", "datasets"),
        _make("tasks", "task", "tasks"),
        _make("loggers", "logger", "loggers"),
        _make("callbacks", "callback", "callbacks"),
    ]
