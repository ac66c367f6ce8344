"""The ``train`` options, declared once on RunConfig's fields, for ``train`` and ``config show``."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


_CONFIG_OPTIONS: dict[str, tuple[Any, list[str], str, str, dict[str, Any]]] = {
    "config_files": (list[Path] | None, ["--config", "-c"], "YAML config file, repeatable; later files win.",
                     "Configuration", {}),
    "sets": (list[str] | None, ["--set", "-s"],
             "KEY=VALUE override, repeatable, e.g. backbone.drop_path_rate=0.1.", "Configuration", {}),
}  # fmt: skip


def _complete(kind: str) -> Callable[[str], list[str]]:
    """A Typer ``autocompletion`` callback for names of ``kind`` (cheap: the registry only, no torch);
    dataset directories are left to the shell's own file completion."""

    def complete(incomplete: str) -> list[str]:
        from visionkit_core.plugin.manager import get_plugins

        try:
            registry = get_plugins().registry
            namespace, sep, _ = incomplete.partition(":")
            if sep and namespace in {p.namespace for p in registry.providers(kind)}:
                # a dynamic namespace is listed only once its prefix is typed (timm: imports timm)
                names = [c.qualname for c in registry.listing(kind, namespace)]
            else:
                static = registry.static_components(kind)
                names = sorted({c.name for c in static} | {c.qualname for c in static})
                names += [f"{p.namespace}:" for p in registry.providers(kind)]
        except Exception:  # completion must never print a traceback into the shell
            return []
        return [n for n in names if n.startswith(incomplete)]

    return complete


def _train_options() -> dict[str, tuple[Any, list[str], str, str, dict[str, Any]]]:
    """name -> (type, flag spellings, help, help panel, extra Option kwargs), from RunConfig's fields
    (each declared there once), with ``--config`` and ``--set`` after ``--num-workers``. Every
    default is None so that only flags the user actually gave override --config and --set."""
    from visionkit_core.run.config import RunConfig

    hints = typing.get_type_hints(RunConfig)
    out: dict[str, tuple[Any, list[str], str, str, dict[str, Any]]] = {}
    for f in dataclasses.fields(RunConfig):
        if not f.metadata:
            continue
        meta = f.metadata
        kw = {"autocompletion": _complete(meta["complete"])} if meta["complete"] else {}
        out[f.name] = (hints[f.name] | None, meta["flags"], meta["help"], meta["panel"], kw)
        if f.name == "num_workers":
            out.update(_CONFIG_OPTIONS)
    return out


TRAIN_OPTIONS = _train_options()


def with_train_options(func: F) -> F:
    """Give ``func(**kwargs)`` the full set of train options as its Typer signature."""
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                typ, typer.Option(*decls, help=help, rich_help_panel=panel, show_default=False, **kw)
            ],
        )
        for name, (typ, decls, help, panel, kw) in TRAIN_OPTIONS.items()
    ]
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return func


def config_from_options(options: dict[str, Any]) -> Any:
    """Resolve a RunConfig from parsed train options (defaults < --config < --set < flags)."""
    return config_and_resume(options)[0]


def config_and_resume(options: dict[str, Any]) -> tuple[Any, Any]:
    """The RunConfig of parsed train options and, with ``--resume``, the :class:`ResumePoint` read
    for it (the run continues with its own config; flags given now still override it)."""
    from visionkit_core.run.config import RunConfig, apply_mapping, resolve

    flags = dict(options)
    config_files = flags.pop("config_files", None) or []
    sets = flags.pop("sets", None) or []
    for key in ("loggers", "callbacks"):
        if not flags.get(key):
            flags[key] = None
    base, point = None, None
    if flags.get("resume"):
        from visionkit_core.training.resume import find_resume_checkpoint
        from visionkit_core.workflows.inference import run_dir_of

        point = find_resume_checkpoint(flags["resume"], flags.get("run_dir"))
        for note in point.notes:
            typer.echo(f"visionkit: {note}", err=True)
        base = apply_mapping(RunConfig(), point.meta["config"], f"checkpoint {str(point.path)!r}")
        # the checkpoint holds the weights: nothing is downloaded or re-read when resuming
        base.pretrained, base.weights, base.init_from = False, None, None
        flags["resume"] = str(point.path)
        flags["run_dir"] = str(run_dir_of(point.path)) if flags.get("run_dir") is None else flags["run_dir"]
    return resolve(config_files, sets, flags, base=base), point
