"""Helpers for a plugin's own test suite: the ``plugins check`` conformance checks, and tiny data.

``assert_plugin_conforms("acme")`` runs them on plugin ``acme`` (installed, so that its entry point
is found, or passed as ``plugins=load_plugins(extra=[("acme", module)])``); ``make_imagefolder``
writes a small image tree. Re-exported from :mod:`visionkit_core.kit.checks`; imports no torch.
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
