"""Helpers for a plugin's own test suite: the ``plugins check`` conformance checks, and tiny data.

::

    from visionkit_core.testing import assert_plugin_conforms, make_imagefolder

    def test_the_plugin_conforms() -> None:
        assert_plugin_conforms("acme")           # imports, options, smoke runs of every component

    def test_my_dataset_reads_a_folder(tmp_path):
        root = make_imagefolder(tmp_path / "data", classes=("cat", "dog"), per_class=4)

The plugin must be installed (``pip install -e .``) so that its entry point is found, or
passed in with ``plugins=load_plugins(extra=[("acme", module)])``. The helpers are the kit's
(:mod:`visionkit_core.kit.checks`; the ``plugins check`` command runs the same checks),
re-exported here so that this path stays the documented one. Imports neither torch nor Lightning.
"""

from visionkit_core.kit.checks import (
    CheckReport,
    CheckResult,
    assert_plugin_conforms,
    check_plugin,
    check_plugins,
    make_imagefolder,
    write_images,
)

__all__ = [
    "CheckReport",
    "CheckResult",
    "assert_plugin_conforms",
    "check_plugin",
    "check_plugins",
    "make_imagefolder",
    "write_images",
]
