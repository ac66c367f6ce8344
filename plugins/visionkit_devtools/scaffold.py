"""``visionkit plugins new``: write a ready-to-install plugin package skeleton.

The skeleton is a complete distribution (``pyproject.toml`` with the ``visionkit`` entry
point, a plugin module implementing the hooks, the components it registers written from the
task/data contract, a README and tests that use :mod:`visionkit_core.testing`). Its files
are real files under ``templates/plugin/`` (package data), kept valid Python/TOML so that
ruff checks them: placeholders are names that stay valid where they stand
(``visionkit_plugin_name`` -> the package, ``visionkit-plugin-name`` -> the distribution,
``plugin_name`` -> the plugin's name and namespace, ``visionkit>=0.0`` -> this version) plus
``{{name}}``-style ones in text. Importing this module is cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from visionkit_core.errors import UsageError

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*[a-z0-9]$")
#: Plugin names whose package would shadow visionkit's own (``visionkit_<name>``).
_RESERVED = {
    "core",
    "visionkit",
    "torchvision",
    "timm",
    "classification",
    "imagefolder",
    "loggers",
    "callbacks",
    "wandb_images",
    "devtools",
}


@dataclass(frozen=True)
class PluginNames:
    """The names one plugin is known by."""

    name: str  # entry-point name = plugin name = default namespace, e.g. "acme"
    package: str  # import package, e.g. "visionkit_acme"
    distribution: str  # pip name, e.g. "visionkit-acme"


def plugin_names(name: str) -> PluginNames:
    """Validate ``name`` and derive the package and distribution names from it."""
    raw = name.strip()
    bare = re.sub(r"^visionkit[-_]", "", raw.lower())
    if not _NAME_RE.match(bare):
        raise UsageError(
            f"invalid plugin name {raw!r}: use 2+ lowercase letters, digits, '-' or '_', starting "
            "with a letter, e.g. 'acme' (the package becomes visionkit_acme, the namespace acme)"
        )
    if bare.replace("-", "_") in _RESERVED:
        raise UsageError(f"plugin name {bare!r} is taken by visionkit itself; choose another name")
    return PluginNames(bare, "visionkit_" + bare.replace("-", "_"), "visionkit-" + bare.replace("_", "-"))


TEMPLATE = "templates/plugin"


def _replacements(names: PluginNames) -> list[tuple[str, str]]:
    """Placeholder -> value, longest first (``plugin_name`` is part of ``visionkit_plugin_name``)."""
    from visionkit_core import HOOKSPEC_VERSION, __version__

    values = {
        "name": names.name,
        "package": names.package,
        "dist": names.distribution,
        "visionkit_version": __version__,
        "hookspec_version": HOOKSPEC_VERSION,
    }
    return [
        *((f"{{{{{key}}}}}", value) for key, value in values.items()),
        ("visionkit_plugin_name", names.package),
        ("visionkit-plugin-name", names.distribution),
        ("plugin_name", names.name),
        ('"visionkit>=0.0"', f'"visionkit>={__version__}"'),
    ]


def render(text: str, replacements: list[tuple[str, str]]) -> str:
    """Fill the placeholders of one template file."""
    for placeholder, value in replacements:
        text = text.replace(placeholder, value)
    return text


def template_files() -> dict[str, str]:
    """Every template file: path relative to the skeleton's root (with placeholders) -> text."""
    root = resources.files("visionkit_devtools").joinpath(TEMPLATE)
    out: dict[str, str] = {}
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in folder.iterdir():
            rel = f"{prefix}{entry.name}"
            if entry.is_dir():
                if entry.name != "__pycache__":
                    stack.append((entry, rel + "/"))
            elif not entry.name.endswith((".pyc", ".pyo")):
                out[rel] = entry.read_text(encoding="utf-8")
    return dict(sorted(out.items()))


def write_plugin(name: str, parent: Path) -> Path:
    """Write the skeleton for plugin ``name`` into ``parent/<distribution>``; return that folder."""
    names = plugin_names(name)
    root = Path(parent) / names.distribution
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{str(root)!r} already exists and is not empty; choose another --dir or name")
    replacements = _replacements(names)
    try:
        for rel, text in template_files().items():
            path = root / render(rel, replacements)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(text, replacements), encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write the plugin into {str(root)!r}: {err.strerror or err}") from None
    return root
