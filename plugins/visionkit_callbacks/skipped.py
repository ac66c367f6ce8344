"""Name every sample a run skips through visionkit's own output, whatever Python's warning filters say.

The names come from the Trainer's datamodule's ``bad_samples()`` (the :class:`VisionData` contract),
never from warnings: with ``PYTHONWARNINGS=ignore`` a run still prints one line per skipped
file (rank 0, as it meets them) and lists them in ``summary.json`` at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from lightning.pytorch.callbacks import Callback

from visionkit_core.run.report import bad_samples_of, skipped_name

#: Lines printed while training; past this many the rest are counted in summary.json only.
PRINTED_MAX = 100
#: Batch-end checks run at most this often (seconds); epoch ends always check.
POLL_INTERVAL_S = 1.0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SkippedFilesReport(Callback):
    """Print each newly skipped sample once (``visionkit: skipped PATH: REASON``), on rank 0."""

    def __init__(self, echo: Callable[[str], None] = _stderr) -> None:
        self.echo = echo
        self.seen: set[str] = set()
        self._last = 0.0

    def poll(self, trainer: Any) -> None:
        """Print what ``bad_samples()`` holds that was not printed yet."""
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        self._last = time.monotonic()
        for sample in bad_samples_of(trainer.datamodule):
            name = skipped_name(sample)
            if name in self.seen:
                continue
            self.seen.add(name)
            if len(self.seen) <= PRINTED_MAX:
                self.echo(f"visionkit: skipped {sample.describe()}")
            elif len(self.seen) == PRINTED_MAX + 1:
                self.echo(
                    f"visionkit: more than {PRINTED_MAX} samples skipped; summary.json counts and lists them"
                )

    def _maybe_poll(self, trainer: Any) -> None:
        if time.monotonic() - self._last >= POLL_INTERVAL_S:
            self.poll(trainer)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.poll(trainer)  # rows a manifest could not use are known once the data is set up

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._maybe_poll(trainer)

    def on_validation_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._maybe_poll(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.poll(trainer)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.poll(trainer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.poll(trainer)
