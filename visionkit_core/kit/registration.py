"""Declarative registration: a plugin's registration hooks written as short tables (torch-free).

A plugin module that only registers components need not repeat a hook function per kind.
Each helper here (:func:`backbones`, :func:`tasks`, :func:`datasets`, :func:`callbacks`,
:func:`loggers`) takes the plugin's :class:`Entry` and :class:`Namespace` rows and returns a
real ``@hookimpl`` function; assigned to the hook's name, pluggy sees it like a hand-written
one (``tryfirst``/``trylast`` and wrappers are unaffected, third-party plugins written against
hookspec 1.1 keep working unchanged, and the two styles mix in one module)::

    from visionkit_core.kit.registration import Entry, Namespace, backbones, tasks

    visionkit_register_tasks = tasks(
        Entry("smooth-classifier", "visionkit_acme.components:SmoothClassifier", "label smoothing"),
    )
    visionkit_register_backbones = backbones(
        Namespace("acme", "visionkit_acme.zoo:resolve", "visionkit_acme.zoo:list_names", "any zoo model"),
    )

Each row becomes one ``registry.add`` (or ``registry.add_namespace``) call, in the order written,
so a table behaves exactly like the hook it replaces: names go to the plugin's default namespace
unless they name one, factories stay ``"module:attr"`` strings imported on first use, and a
conflict is reported naming both plugins.

``visionkit_claim_data`` stays a hand-written hook (it decides); :func:`coco_or_yolo` is the
stat-only look at the two annotation layouts that the detection, instance-segmentation and
keypoints plugins claim, for any plugin whose datamodule reads them. Importing this module
imports neither torch nor Lightning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from visionkit_core.plugin.hookspecs import hookimpl
from visionkit_core.plugin.manager import _REGISTER_HOOKS

if TYPE_CHECKING:
    from visionkit_core.plugin.registry import Factory, Registrar

__all__ = [
    "HOOKS",
    "Entry",
    "Namespace",
    "backbones",
    "callbacks",
    "coco_or_yolo",
    "datasets",
    "loggers",
    "registration",
    "tasks",
]

#: The registration hook of each component kind: the core's own table (the plugin manager's).
HOOKS: Mapping[str, str] = MappingProxyType(_REGISTER_HOOKS)


@dataclass(frozen=True)
class Entry:
    """One named component: ``registry.add(name, factory, description=..., check=...)``.

    ``factory`` is a callable or, better, a ``"module:attr"`` string (imported on first use);
    ``check`` (datasets only) is the ``visionkit data check`` function, also as a string.
    """

    name: str
    factory: Factory
    description: str = ""
    check: Factory | None = None

    def add_to(self, registry: Registrar) -> None:
        """Stage this row on ``registry``."""
        registry.add(self.name, self.factory, description=self.description, check=self.check)


@dataclass(frozen=True)
class Namespace:
    """A dynamic namespace: ``registry.add_namespace(namespace, resolve, list_names, description=...)``.

    ``resolve(name, **options)`` builds ``namespace:name``; ``list_names()`` (optional) lists them.
    """

    namespace: str
    resolve: Factory
    list_names: Factory | None = None
    description: str = ""

    def add_to(self, registry: Registrar) -> None:
        """Stage this row on ``registry``."""
        registry.add_namespace(self.namespace, self.resolve, self.list_names, description=self.description)


Row = Entry | Namespace


def registration(kind: str, *rows: Row) -> Callable[[Registrar], None]:
    """The ``@hookimpl`` registering ``rows`` for components of ``kind`` (``"task"``, ...).

    Assign it to the hook of that kind (``HOOKS[kind]``); the per-kind helpers below name the
    kind for you. The function carries its table as ``.rows`` and its kind as ``.kind``.
    """
    if kind not in HOOKS:
        raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(HOOKS)}")
    bad = [row for row in rows if not isinstance(row, Entry | Namespace)]
    if bad:
        raise TypeError(f"{HOOKS[kind]} rows must be Entry or Namespace, got {bad[0]!r}")
    hook_name = HOOKS[kind]

    def hook(registry: Registrar) -> None:
        called_for = getattr(registry, "kind", kind)
        if called_for != kind:
            raise TypeError(
                f"{_HELPER[kind]}(...) is assigned to {HOOKS[called_for]}: assign it to {hook_name}, "
                f"and write {called_for} rows with {_HELPER[called_for]}(...)"
            )
        for row in rows:
            row.add_to(registry)

    hook.__name__ = hook.__qualname__ = hook_name
    hook.__doc__ = f"Register {', '.join(_label(row) for row in rows) or 'nothing'} ({kind} table)."
    hook.rows = rows  # type: ignore[attr-defined]
    hook.kind = kind  # type: ignore[attr-defined]
    return hookimpl(hook)


def backbones(*rows: Row) -> Callable[[Registrar], None]:
    """``visionkit_register_backbones = backbones(Entry(...), Namespace(...), ...)``."""
    return registration("backbone", *rows)


def tasks(*rows: Row) -> Callable[[Registrar], None]:
    """``visionkit_register_tasks = tasks(Entry(...), ...)``."""
    return registration("task", *rows)


def datasets(*rows: Row) -> Callable[[Registrar], None]:
    """``visionkit_register_datasets = datasets(Entry(..., check=...), Namespace(...), ...)``."""
    return registration("dataset", *rows)


def callbacks(*rows: Row) -> Callable[[Registrar], None]:
    """``visionkit_register_callbacks = callbacks(Entry(...), ...)``."""
    return registration("callback", *rows)


def loggers(*rows: Row) -> Callable[[Registrar], None]:
    """``visionkit_register_loggers = loggers(Entry(...), ...)``."""
    return registration("logger", *rows)


#: The YOLO dataset files a folder may hold (Ultralytics' names).
YAML_NAMES = ("data.yaml", "dataset.yaml")


def coco_or_yolo(path: Path, coco_prefix: str = "instances") -> tuple[str, Path] | None:
    """``("coco", train file)`` when ``path/annotations`` holds ``<coco_prefix>_train*.json``,
    ``("yolo", yaml file)`` when ``path`` is a ``.yaml`` file or holds ``data.yaml`` /
    ``dataset.yaml``; else (or on an unreadable folder) None. Stat calls only: no file is parsed.
    """
    try:
        folder = path / "annotations"
        if path.is_dir() and folder.is_dir():
            names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
            found = next((n for n in names if n.startswith(f"{coco_prefix}_train")), None)
            if found is not None:
                return "coco", folder / found
        if path.is_file():
            return ("yolo", path) if path.suffix.lower() in (".yaml", ".yml") else None
        yaml_file = next((path / n for n in YAML_NAMES if (path / n).is_file()), None)
    except OSError:
        return None
    return ("yolo", yaml_file) if yaml_file is not None else None


#: The helper that writes the table of each kind (for the message when one is assigned to another hook).
_HELPER = {kind: f"{kind}s" for kind in HOOKS}


def _label(row: Any) -> str:
    return f"``{row.name}``" if isinstance(row, Entry) else f"``{row.namespace}:*``"
