"""SIGTERM during a fit: save ``last.ckpt`` so that ``--resume last`` continues exactly.

Lightning notes SIGTERM, raises ``SIGTERMException`` at the next batch boundary and saves
nothing itself; :class:`SigtermCheckpoint` writes ``last.ckpt`` there, next to the checkpoints
of :func:`visionkit_callbacks.defaults.best_checkpoint`. What it did reaches the core through
``visionkit_summary`` (``"sigterm"``), which turns it into the one-line error and exit 143.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from visionkit_callbacks.defaults import checkpoint_callback
from visionkit_core import VisionkitError


class SigtermCheckpoint(Callback):
    """Write ``last.ckpt`` when SIGTERM stops the run, so ``--resume last`` continues from there.

    The state at that batch boundary is saved atomically, through the Trainer's checkpoint I/O.
    On SLURM with auto-requeue, Lightning's own handler additionally saves and requeues.
    """

    def __init__(self) -> None:
        self.outcome: dict[str, Any] = {}

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        ckpt = checkpoint_callback(trainer.callbacks)
        if ckpt is None or not ckpt.dirpath:
            return
        path = Path(ckpt.dirpath) / f"{ckpt.CHECKPOINT_NAME_LAST}{ckpt.FILE_EXTENSION}"
        try:  # an exception here would skip Lightning's teardown: report it instead
            trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume from
        except VisionkitError as err:
            self.outcome = {"error": str(err)}
            return
        self.outcome = {"saved": str(path), "step": int(trainer.global_step)}

    def visionkit_summary(self, trainer: Any) -> dict[str, Any]:
        """``{"sigterm": {"saved": PATH, "step": N}}`` (or ``{"error": ...}``) once SIGTERM stopped it."""
        return {"sigterm": dict(self.outcome)} if self.outcome else {}
