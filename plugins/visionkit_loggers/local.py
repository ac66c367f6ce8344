"""CSV and TensorBoard loggers that write straight into the run directory (no version_N folders).

Lightning's loggers nest their files under ``save_dir/name/version_N``; a visionkit run
directory already is one run, so ``name``/``version`` are set to put the files where a user
looks for them: ``<run_dir>/metrics.csv`` and ``<run_dir>/tensorboard/``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import cast

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _RunDirWriter(ExperimentWriter):
    """Lightning's CSV writer, minus its check for an empty log directory.

    The run directory also holds config.yaml and checkpoints/, which made Lightning warn that
    "previous log files will be deleted", and it deleted an existing metrics.csv. Here a
    metrics.csv already present (a resumed run) is kept and appended to: its header seeds
    the known columns, so new columns rewrite the header instead of dropping old rows.
    """

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
            header = next(csv.reader(fh), [])
        self.metrics_keys = [key for key in header if key]


class RunDirCSVLogger(CSVLogger):
    """A ``CSVLogger`` whose log directory is exactly ``save_dir`` (see :class:`_RunDirWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        if self._experiment is None:
            self._fs.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _RunDirWriter(log_dir=self.log_dir)
        return cast(ExperimentWriter, self._experiment)


def csv_logger(run_dir: Path, flush_logs_every_n_steps: int = 100) -> CSVLogger:
    """Log metrics to ``<run_dir>/metrics.csv`` and hyperparameters to ``<run_dir>/hparams.yaml``."""
    # name="" and version="" make log_dir == save_dir: os.path.join(run_dir, "", "").
    return RunDirCSVLogger(
        save_dir=Path(run_dir),
        name="",
        version="",
        flush_logs_every_n_steps=flush_logs_every_n_steps,
    )


def tensorboard_logger(run_dir: Path, log_graph: bool = False) -> TensorBoardLogger:
    """Log TensorBoard event files to ``<run_dir>/tensorboard/`` (view: ``tensorboard --logdir RUN_DIR``)."""
    # default_hp_metric=False: no placeholder "hp_metric=-1" scalar in every run.
    return TensorBoardLogger(
        save_dir=Path(run_dir),
        name="tensorboard",
        version="",
        log_graph=log_graph,
        default_hp_metric=False,
    )
