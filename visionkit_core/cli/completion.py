"""Shell completion of component names (cheap: the registry only, no torch)."""

from __future__ import annotations

from collections.abc import Callable


def _names(kind: str, incomplete: str) -> list[str]:
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


def completer(kind: str) -> Callable[[str], list[str]]:
    """A Typer ``autocompletion`` callback for names of ``kind``."""

    def complete(incomplete: str) -> list[str]:
        return _names(kind, incomplete)

    return complete


def complete_data(incomplete: str) -> list[str]:
    """Dataset names; directories are left to the shell's own file completion."""
    return _names("dataset", incomplete)
