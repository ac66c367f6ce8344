"""The evaluation-callback base: history, training curves, the task's figures at the end of fit.

:class:`EvaluationCallback` is what every task's ``evaluation_callbacks`` builds on. It
records one row per epoch (``plots/history.csv``; ``training_curves.png`` redrawn after
every epoch, so a run can be watched), keeps the history in checkpoints (``--resume``
continues it), collects what the task's validation step left in ``last_eval_output`` (never
a second forward pass), and at the end of fit (or on Ctrl-C) writes the task's figures and
tables under ``<run_dir>/plots/`` and sends the figures to TensorBoard / wandb as
``plots/<name>``. Only rank zero writes; a failing plot warns and never fails a finished run.

The figures themselves come from :mod:`visionkit_core.kit.plots` (torch-free).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from visionkit_core import log_figure, never_fail, save_png, write_csv
from visionkit_core.kit.plots import Row, cell, curves_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def history_columns(*keys: str) -> dict[str, tuple[str, ...]]:
    """:attr:`EvaluationCallback.columns` for ``train/loss`` (its epoch mean) and ``keys`` as logged."""
    return {"train/loss": ("train/loss_epoch", "train/loss"), **{key: (key,) for key in keys}}


class EvaluationCallback(Callback):
    """History and training curves every epoch; the task's figures at the end of fit.

    A subclass sets :attr:`columns` (history.csv's columns and the ``callback_metrics`` keys
    each is read from) and :attr:`panels` (the training-curve panels), and overrides what it
    needs: :meth:`media` (MediaSamples of a validation batch, kept in :attr:`samples`), or
    :meth:`reset` and :meth:`collect` (per validation batch, given the task's
    ``last_eval_output``), :meth:`collected` (at the end of a validation), and
    :meth:`figures` (write tables, return figures by file name).

    ``last_eval_output`` is one shape for every task: ``(images, truth, pred)``, the model input
    batch, the truth as the batch carries it (a batched
    :class:`~visionkit_core.plugin.contract.Sample`, or a list of per-image Samples) and the
    prediction as Samples in the same form; the task's validation step sets it, the callback
    reads it once and resets it to None (never a second forward pass).

    Args:
        run_dir: the run directory; files go to ``<run_dir>/plots/``.
        num_samples: how many media samples of the last validation to keep.
    """

    #: history.csv columns after ``epoch``, each with the ``callback_metrics`` keys it is read from.
    columns: Mapping[str, tuple[str, ...]] = {"train/loss": ("train/loss_epoch", "train/loss")}
    #: the training-curve panels: ``(title, columns)``.
    panels: Sequence[tuple[str, Sequence[str]]] = (("loss", ("train/loss",)),)
    #: add the first param group's learning rate as column ``lr``.
    record_lr = False

    #: how many media samples of the last validation to keep (``num_samples`` overrides it).
    default_samples = 0

    def __init__(self, run_dir: str | Path, num_samples: int | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.num_samples = int(self.default_samples if num_samples is None else num_samples)
        #: the last validation's media samples (rank zero's, at most ``num_samples``).
        self.samples: list[Any] = []
        self.history: list[Row] = []
        self.collecting = False
        self._validated = False

    @property
    def plots_dir(self) -> Path:
        return self.run_dir / "plots"

    # -- for subclasses --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget what the previous validation collected."""
        self.samples = []

    def collect(self, trainer: L.Trainer, pl_module: Any, batch: Any, stored: Any) -> None:
        """One validation batch (``stored``: the task's ``last_eval_output``, ``(images, truth, pred)``,
        or None).

        By default rank zero keeps up to ``num_samples`` of :meth:`media` in :attr:`samples`.
        """
        take = self.num_samples - len(self.samples)
        if stored is not None and take > 0 and trainer.is_global_zero:
            self.samples += self.media(pl_module, stored, take)[:take]

    def media(self, pl_module: Any, stored: Any, limit: int) -> list[Any]:
        """Up to ``limit`` :class:`~visionkit_core.MediaSample` of a validation batch's ``stored`` output
        (``(images, truth, pred)``: :func:`~visionkit_core.kit.media.media_sample_of` makes one per
        image)."""
        return []

    def collected(self, trainer: L.Trainer, pl_module: Any) -> None:
        """A validation (not the sanity check) ended; every rank calls this (gather here)."""

    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Figure]:
        """Write the task's tables; return its figures by name (``<name>.png``)."""
        return {}

    # -- state: the history survives --resume through the checkpoint -------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resuming from an older checkpoint: epochs from here on will be recorded again.
        self.history = [row for row in self.history if (row["epoch"] or 0) < trainer.current_epoch]
        self._drawn = time.monotonic()  # the first redraw after curves_every_s of training

    # -- collecting the validation outputs ----------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.collecting = not trainer.sanity_checking
        if self.collecting:
            self.reset()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        stored = getattr(pl_module, "last_eval_output", None)
        if stored is not None:
            pl_module.last_eval_output = None  # type: ignore[assignment]  # never reuse a stale batch
        if self.collecting and dataloader_idx == 0:
            self.collect(trainer, pl_module, batch, stored)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.collecting:
            self.collecting, self._validated = False, True
            self.collected(trainer, pl_module)

    # -- per-epoch history ----------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: Row = {"epoch": float(trainer.current_epoch)}
        for column, keys in self.columns.items():
            value = next((metrics[k] for k in keys if k in metrics), None)
            # an epoch without validation must not repeat the previous validation's values
            stale = column.startswith("val/") and not self._validated
            row[column] = None if value is None or stale else float(value)
        if self.record_lr:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None
        self._validated = False
        self.history.append(row)
        if trainer.is_global_zero:
            # the figure costs ~0.3-0.9 s on a CPU: redrawn at most every curves_every_s while
            # training, never after the last epoch (the end of fit draws it)
            last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
            due = not last and time.monotonic() - self._drawn >= self.curves_every_s
            never_fail("training curves", self.write_history, due)

    #: seconds between redraws of training_curves.png during fit (history.csv: every epoch).
    curves_every_s = 20.0
    _drawn = float("-inf")

    def write_history(self, draw: bool = True) -> Figure | None:
        """Write ``history.csv`` and (``draw``) ``training_curves.png``; the curves figure (None:
        no epoch yet, or not drawn)."""
        if not self.history:
            return None
        columns = ["epoch", *self.columns, *(["lr"] if self.record_lr else [])]
        rows = [[cell(row.get(c), integer=c == "epoch") for c in columns] for row in self.history]
        write_csv(self.plots_dir / "history.csv", columns, rows)
        if not draw:
            return None
        self._drawn = time.monotonic()
        fig = curves_figure(self.history, self.panels)
        save_png(fig, self.plots_dir / "training_curves.png")
        return fig

    # -- writing ----------------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            never_fail("plots", self.write, trainer, pl_module)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Ctrl-C ends fit without on_fit_end; keep what the finished validations showed.
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            never_fail("plots", self.write, None, pl_module)

    def write(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Path]:
        """Write every plot and table; send the figures to ``trainer``'s loggers when given."""
        figures: dict[str, Figure] = {}
        curves = self.write_history()
        if curves is not None:
            figures["training_curves"] = curves
        figures.update(self.figures(trainer, pl_module))
        paths = {name: self.plots_dir / f"{name}.png" for name in figures}
        for name, fig in figures.items():
            if name != "training_curves":
                save_png(fig, paths[name])
            if trainer is not None:
                log_figure(trainer, name, fig, paths[name])
        return paths


class TaskEvaluation(EvaluationCallback):
    """The evaluation a task gets by default (:meth:`TaskBase.evaluation_callbacks`).

    ``history.csv`` and ``training_curves.png`` with ``train/loss`` and the metrics the task's
    :class:`~visionkit_core.TaskSpec` names (``monitor``, then ``metrics``), and, when the task
    has ``media_samples(batch, limit)``, a grid of the last validation's first images with
    their truth and prediction (``plots/samples.png``, rank zero, at most ``num_samples``).
    """

    default_samples = 8

    def __init__(self, run_dir: str | Path, spec: Any, num_samples: int | None = None) -> None:
        super().__init__(run_dir, num_samples)
        keys = list(dict.fromkeys([spec.monitor, *spec.metrics]))
        self.columns = history_columns(*keys)
        self.panels = (("loss", ("train/loss",)), *((key, (key,)) for key in keys))

    def collect(self, trainer: L.Trainer, pl_module: Any, batch: Any, stored: Any) -> None:
        take = self.num_samples - len(self.samples)
        make = getattr(pl_module, "media_samples", None)
        if take > 0 and trainer.is_global_zero and callable(make):
            import torch

            with torch.no_grad():
                self.samples += list(make(batch, take))[:take]

    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Figure]:
        if not self.samples:
            return {}
        from visionkit_core.kit.plots import media_grid

        names = getattr(pl_module, "class_names", None)
        return {"samples": media_grid(self.samples, list(names) if names else None)}
