"""Hook implementations of the built-in visionkit_callbacks plugin.

``early-stopping`` is registered for ``--callback``; the always-on callbacks of a fit come
through ``visionkit_default_callbacks`` (best + last checkpoints by the task's metric, a
learning-rate monitor, ``last.ckpt`` on SIGTERM, the RNG states for exact resume, throughput for
summary.json, torch threads that fit the free cores, the run record in config.yaml, skipped-file lines, the
non-finite and secret guards, one-rank-fails-all-end), the recipe callbacks (``--ema``,
``--freeze-backbone``) through ``visionkit_configure_trainer``, and the progress display
through ``visionkit_progress_bar``, so every Trainer visionkit builds gets them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    from lightning.pytorch.callbacks import Callback

    from visionkit_core import Registrar, TaskSpec
    from visionkit_core.run.config import RunConfig


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
    """fit: best + last checkpoints by ``task.monitor`` (last on SIGTERM too), LR monitor, run guards."""
    if stage != "fit" or run_dir is None:
        return []
    from visionkit_callbacks.defaults import default_callbacks
    from visionkit_callbacks.guards import guard_callbacks
    from visionkit_callbacks.rank_failure import RankFailure
    from visionkit_callbacks.record import RunRecord
    from visionkit_callbacks.rng import RNGState
    from visionkit_callbacks.sigterm import SigtermCheckpoint
    from visionkit_callbacks.skipped import SkippedFilesReport
    from visionkit_callbacks.threads import ThreadPolicy
    from visionkit_callbacks.throughput import ThroughputCallback

    return [
        *default_callbacks(run_dir, monitor=task.monitor, mode=task.mode, progress=False),
        SigtermCheckpoint(),
        RNGState(),
        ThroughputCallback(),
        ThreadPolicy(),
        RunRecord(run_dir),
        SkippedFilesReport(),
        *guard_callbacks(),
        RankFailure(run_dir),
    ]


@hookimpl
def visionkit_configure_trainer(trainer_kwargs: dict[str, Any], run: RunConfig) -> None:
    """The callbacks of the recipe flags: ``--freeze-backbone`` and ``--ema``."""
    if not (run.freeze_backbone or run.ema):
        return
    from visionkit_callbacks.recipe import recipe_callbacks

    trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), *recipe_callbacks(run)]


@hookimpl(trylast=True)
def visionkit_progress_bar(stage: str) -> Callback:
    """A live bar on a terminal, one line per epoch otherwise (``trylast``: any plugin's bar wins)."""
    from visionkit_callbacks.progress import progress_bar

    return progress_bar()
