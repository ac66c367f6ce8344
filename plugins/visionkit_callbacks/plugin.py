"""Hook implementations of the built-in visionkit_callbacks plugin.

``early-stopping`` is registered for ``--callback``; the always-on callbacks (best + last
checkpoints by the task's metric, learning-rate monitor) come through
``visionkit_default_callbacks`` and the progress display through ``visionkit_progress_bar``,
so every Trainer visionkit builds gets them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    from lightning.pytorch.callbacks import Callback

    from visionkit_core import Registrar, TaskSpec


@hookimpl
def visionkit_register_callbacks(registry: Registrar) -> None:
    """Register the ``early-stopping`` callback."""
    registry.add(
        "early-stopping",
        "visionkit_callbacks.defaults:early_stopping",
        description="stop when a metric stops improving (monitor, patience, mode, min_delta)",
    )


@hookimpl
def visionkit_default_callbacks(stage: str, run_dir: Path | None, task: TaskSpec) -> list[Callback]:
    """fit: best + last checkpoints by ``task.monitor`` and a learning-rate monitor."""
    if stage != "fit" or run_dir is None:
        return []
    from visionkit_callbacks.defaults import default_callbacks

    return default_callbacks(run_dir, monitor=task.monitor, mode=task.mode, progress=False)


@hookimpl(trylast=True)
def visionkit_progress_bar(stage: str) -> Callback:
    """A live bar on a terminal, one line per epoch otherwise (``trylast``: any plugin's bar wins)."""
    from visionkit_callbacks.progress import progress_bar

    return progress_bar()
