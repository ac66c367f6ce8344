"""Hook implementations of the built-in visionkit_callbacks plugin: ``early-stopping``.

The always-on callbacks (checkpointing, learning-rate monitor, progress display) are not
registered: the assembler adds them itself with :func:`visionkit_callbacks.defaults.default_callbacks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar


@hookimpl
def visionkit_register_callbacks(registry: Registrar) -> None:
    """Register the ``early-stopping`` callback."""
    registry.add(
        "early-stopping",
        "visionkit_callbacks.defaults:early_stopping",
        description="stop when a metric stops improving (monitor, patience, mode, min_delta)",
    )
