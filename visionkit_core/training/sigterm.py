"""SIGTERM during a fit: save ``last.ckpt`` so that ``--resume last`` continues exactly, then exit 143.

:class:`SigtermCheckpoint` writes ``last.ckpt`` when Lightning stops for SIGTERM (it saves
nothing itself and exits 0); the assembler then raises :class:`Terminated` (exit 143).
Imported only by the assembler (it imports Lightning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from visionkit_core.errors import VisionkitError

__all__ = ["SIGTERMException", "SigtermCheckpoint", "Terminated", "terminated"]

#: 128 + SIGTERM, what a shell reports for a process that SIGTERM ended.
SIGTERM_EXIT_CODE = 143


class Terminated(VisionkitError):
    """The run stopped because it received SIGTERM (after saving ``last.ckpt``)."""

    exit_code = SIGTERM_EXIT_CODE


def _last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    ckpt = next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)  # type: ignore[attr-defined]
    if ckpt is None or not ckpt.dirpath:
        return None
    return Path(ckpt.dirpath) / f"{ckpt.CHECKPOINT_NAME_LAST}{ckpt.FILE_EXTENSION}"


class SigtermCheckpoint(Callback):
    """Write ``last.ckpt`` when SIGTERM stops the run, so ``--resume last`` continues from there.

    Lightning notes SIGTERM and raises ``SIGTERMException`` at the next batch boundary; this
    saves the state at that point (atomically, through the Trainer's checkpoint I/O). On SLURM
    with auto-requeue, Lightning's own handler additionally saves and requeues.
    """

    def __init__(self) -> None:
        self.saved: Path | None = None
        self.step = 0
        self.error: str | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        path = _last_checkpoint_path(trainer)
        if path is None:
            return
        try:  # an exception here would skip Lightning's teardown: report it instead
            trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume from
        except VisionkitError as err:
            self.error = str(err)
            return
        self.saved, self.step = path, trainer.global_step


def terminated(callbacks: list[Any], run_dir: Path) -> Terminated:
    """The one-line error for a run SIGTERM stopped: what was saved and how to continue."""
    guard = next((cb for cb in callbacks if isinstance(cb, SigtermCheckpoint)), None)
    resume = f"continue with: visionkit train --resume last --run-dir {run_dir}"
    if guard is not None and guard.saved is not None:
        return Terminated(f"stopped by SIGTERM at step {guard.step}; saved {guard.saved}; {resume}")
    if guard is not None and guard.error:
        return Terminated(f"stopped by SIGTERM; {guard.error}")
    return Terminated(f"stopped by SIGTERM before training started; nothing new to save; {resume}")
