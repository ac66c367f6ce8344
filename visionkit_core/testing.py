"""Helpers for a plugin's own test suite: the ``plugins check`` conformance checks, and tiny data.

::

    from visionkit_core.testing import assert_plugin_conforms, make_imagefolder

    def test_the_plugin_conforms() -> None:
        assert_plugin_conforms("acme")           # imports, options, smoke runs of every component

    def test_my_dataset_reads_a_folder(tmp_path):
        root = make_imagefolder(tmp_path / "data", classes=("cat", "dog"), per_class=4)

The plugin must be installed (``pip install -e .``) so that its entry point is found, or
passed in with ``plugins=load_plugins(extra=[("acme", module)])``. Importing this module
imports neither torch nor Lightning; the checks and the image writers import what they need.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from visionkit_core.plugin.conformance import CheckReport, CheckResult

if TYPE_CHECKING:
    from visionkit_core.plugin.manager import Plugins


def check_plugins(
    names: Sequence[str] | None = None,
    *,
    smoke: bool = True,
    data: str | None = None,
    plugins: Plugins | None = None,
    work_dir: Path | None = None,
) -> CheckReport:
    """Run the ``visionkit plugins check`` checks on plugins ``names`` (default: all loaded)."""
    from visionkit_core.plugin.conformance import run_checks
    from visionkit_core.plugin.manager import get_plugins

    return run_checks(plugins or get_plugins(), names, smoke=smoke, data=data, work_dir=work_dir)


def check_plugin(
    name: str,
    *,
    smoke: bool = True,
    data: str | None = None,
    plugins: Plugins | None = None,
    work_dir: Path | None = None,
) -> CheckReport:
    """The checks of one plugin: a :class:`CheckReport` (``.ok``, ``.failures``, ``.results``)."""
    return check_plugins([name], smoke=smoke, data=data, plugins=plugins, work_dir=work_dir)


def assert_plugin_conforms(
    name: str,
    *,
    smoke: bool = True,
    data: str | None = None,
    plugins: Plugins | None = None,
    work_dir: Path | None = None,
) -> CheckReport:
    """Raise ``AssertionError`` listing every failed check of plugin ``name``; return the report."""
    report = check_plugin(name, smoke=smoke, data=data, plugins=plugins, work_dir=work_dir)
    if not report.ok:
        lines = "\n".join(r.line() for r in report.failures)
        raise AssertionError(f"plugin {name!r} does not conform to the visionkit contract:\n{lines}")
    return report


def write_images(
    folder: Path, count: int, *, size: int = 32, prefix: str = "image", suffix: str = ".png", seed: int = 0
) -> list[Path]:
    """Write ``count`` small real RGB images (random colours, PNG by default) into ``folder``."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        path = folder / f"{prefix}_{i}{suffix}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def make_imagefolder(
    root: Path,
    classes: Sequence[str] = ("a", "b"),
    per_class: int = 4,
    *,
    size: int = 32,
    splits: Sequence[str] = ("train", "val"),
    seed: int = 0,
) -> Path:
    """Write an ImageFolder tree ``root/<split>/<class>/*.png`` of tiny real PNGs; return ``root``.

    Each class has its own dominant colour (so a model can learn it) plus noise. With
    ``splits=()`` the classes go straight under ``root`` (the ``--val-split`` layout).
    """
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for index, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.zeros((size, size, 3), dtype=np.uint8)
                pixels[..., index % 3] = 160 + 40 * (index // 3 % 2)
                pixels += rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


__all__ = [
    "CheckReport",
    "CheckResult",
    "assert_plugin_conforms",
    "check_plugin",
    "check_plugins",
    "make_imagefolder",
    "write_images",
]
