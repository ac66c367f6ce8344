"""The contract checks behind ``visionkit plugins check`` and :mod:`visionkit_core.testing`.

Part of the kit so that the command (the built-in ``visionkit_devtools`` plugin) and a plugin
author's own tests (``visionkit_core.testing``, which re-exports the names here) run the same
checks without the core importing a plugin. Importing this package imports neither torch nor
Lightning; the checks and the image writers import what they need.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from visionkit_core.kit.checks.images import make_imagefolder, write_images
from visionkit_core.kit.checks.report import CheckReport, CheckResult

if TYPE_CHECKING:
    from visionkit_core.plugin.manager import Plugins


def check_plugins(
    names: Sequence[str] | None = None,
    *,
    smoke: bool = True,
    data: str | None = None,
    plugins: Plugins | None = None,
    work_dir: Path | None = None,
    skip: Collection[str] = (),
) -> CheckReport:
    """Run the ``visionkit plugins check`` checks on plugins ``names`` (default: all loaded);
    ``skip``: smoke phases not to run (``"smoke:export-onnx"``), as ``--skip`` does."""
    from visionkit_core.kit.checks.conformance import run_checks
    from visionkit_core.plugin.manager import get_plugins

    plugins = plugins or get_plugins()
    return run_checks(plugins, names, smoke=smoke, data=data, work_dir=work_dir, skip=skip)


def check_plugin(
    name: str,
    *,
    smoke: bool = True,
    data: str | None = None,
    plugins: Plugins | None = None,
    work_dir: Path | None = None,
    skip: Collection[str] = (),
) -> CheckReport:
    """The checks of one plugin: a :class:`CheckReport` (``.ok``, ``.failures``, ``.results``)."""
    return check_plugins([name], smoke=smoke, data=data, plugins=plugins, work_dir=work_dir, skip=skip)


def assert_plugin_conforms(
    name: str,
    *,
    smoke: bool = True,
    data: str | None = None,
    plugins: Plugins | None = None,
    work_dir: Path | None = None,
    skip: Collection[str] = (),
) -> CheckReport:
    """Raise ``AssertionError`` listing every failed check of plugin ``name``; return the report."""
    report = check_plugin(name, smoke=smoke, data=data, plugins=plugins, work_dir=work_dir, skip=skip)
    if not report.ok:
        lines = "\n".join(r.line() for r in report.failures)
        raise AssertionError(f"plugin {name!r} does not conform to the visionkit contract:\n{lines}")
    return report


__all__ = [
    "CheckReport",
    "CheckResult",
    "assert_plugin_conforms",
    "check_plugin",
    "check_plugins",
    "make_imagefolder",
    "write_images",
]
