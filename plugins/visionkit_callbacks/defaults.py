"""The callbacks every visionkit run gets, and the ``early-stopping`` factory.

:func:`default_callbacks` is what the assembler adds to each run: best + last checkpoints in
``<run_dir>/checkpoints/``, a learning-rate monitor that tolerates ``logger=False``, and a
progress display that suits where the output goes (see :mod:`visionkit_callbacks.progress`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint

from visionkit_callbacks.progress import progress_bar
from visionkit_core import ConfigError, atomic_link


class OptionalLearningRateMonitor(LearningRateMonitor):
    """A ``LearningRateMonitor`` that does nothing when the Trainer has no logger.

    Lightning's raises ``MisconfigurationException`` at ``on_train_start`` without a logger;
    the default callbacks must work for ``logger=False`` runs too.
    """

    def on_train_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)


def _file_safe(metric: str) -> str:
    """``val/acc`` -> ``val_acc``: metric names may hold ``/``, file names must not."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is rewritten at every save point.

    Lightning 2.6 rewrites ``last.ckpt`` only when a top-k checkpoint was saved at the same
    step, so once the monitored metric stops improving ``last.ckpt`` goes stale and
    ``--resume last`` would silently go back epochs. Here it always holds the newest state.
    """

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _save_last_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        """When the best checkpoint was just written at this step, ``last.ckpt`` becomes a hard
        link to it: the same state, serialised and written once."""
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        same_state = (
            self.save_last is True
            and bool(self._last_checkpoint_saved)
            and self._last_checkpoint_saved == self.best_model_path
            and self._last_global_step_saved == trainer.global_step
            and self.last_model_path in ("", filepath)
        )
        if same_state and "://" not in filepath:
            linked = True
            if trainer.is_global_zero:
                try:
                    atomic_link(self.best_model_path, filepath)
                except OSError:
                    linked = False  # no hard links here: write the file as Lightning does
            linked = bool(trainer.strategy.broadcast(linked))
            if linked:
                self.last_model_path = filepath
                return
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def _refresh_last(self, trainer: Any) -> None:
        stale = self._last_global_step_saved != trainer.global_step
        if self.save_last and stale and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def best_checkpoint(run_dir: Path, *, monitor: str = "val/acc", mode: str = "max") -> ModelCheckpoint:
    """Keep the best checkpoint by ``monitor`` and ``last.ckpt``, flat in ``<run_dir>/checkpoints/``."""
    return BestAndLastCheckpoint(
        dirpath=Path(run_dir) / "checkpoints",
        # auto_insert_metric_name=False: Lightning would otherwise write "val/acc=" into the
        # name, and the "/" would become a sub-folder.
        filename=f"best-epoch={{epoch:02d}}-{_file_safe(monitor)}={{{monitor}:.4f}}",
        auto_insert_metric_name=False,
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=True,
        # last.ckpt may be a hard link to the best checkpoint, whose callback state predates it (no
        # last_model_path): a resumed run must still overwrite last.ckpt (atomically, replacing the
        # link), never write last-v1.ckpt beside a stale last.ckpt that `--resume last` would pick
        enable_version_counter=False,
    )


def default_callbacks(
    run_dir: Path, *, monitor: str = "val/acc", mode: str = "max", progress: bool = True
) -> list[Callback]:
    """The callbacks every run gets: checkpoints, a learning-rate monitor and a progress display.

    With ``progress=False`` no progress callback is returned; then pass
    ``enable_progress_bar=False`` to the Trainer, or Lightning adds its own bar.
    """
    callbacks: list[Callback] = [
        best_checkpoint(run_dir, monitor=monitor, mode=mode),
        OptionalLearningRateMonitor(logging_interval="epoch"),
    ]
    if progress:
        callbacks.append(progress_bar())
    return callbacks


def checkpoint_callback(callbacks: Iterable[Callback]) -> ModelCheckpoint | None:
    """The first ``ModelCheckpoint`` among ``callbacks`` (e.g. ``trainer.callbacks``), or ``None``."""
    return next((cb for cb in callbacks if isinstance(cb, ModelCheckpoint)), None)


def early_stopping(
    monitor: str = "val/loss", patience: int = 5, mode: str = "min", min_delta: float = 0.0
) -> EarlyStopping:
    """Stop training once ``monitor`` has not improved by ``min_delta`` for ``patience`` validations."""
    if mode not in ("min", "max"):
        raise ConfigError(f"--set callback.early-stopping.mode={mode}: must be 'min' or 'max'")
    if patience < 0:
        raise ConfigError(f"--set callback.early-stopping.patience={patience}: must be >= 0")
    return EarlyStopping(monitor=monitor, patience=int(patience), mode=mode, min_delta=float(min_delta))
