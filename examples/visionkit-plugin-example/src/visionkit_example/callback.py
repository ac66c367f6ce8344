"""``example:record-epochs``: a Lightning callback that writes what it saw as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class EpochRecorder(L.Callback):
    """Record every finished training epoch and its validation accuracy in ``<run_dir>/<filename>``.

    visionkit passes ``run_dir`` because the constructor accepts it; ``filename`` is an
    option (``--set callback.record-epochs.filename=epochs.json``).
    """

    def __init__(self, run_dir: Path, filename: str = "example_callback.json") -> None:
        self.path = Path(run_dir) / filename
        self.epochs: list[int] = []
        self.val_acc: list[float] = []
        #: filled by this plugin's ``visionkit_configure_trainer`` hook
        self.configured: dict[str, Any] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(int(trainer.current_epoch))
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None:
            self.val_acc.append(round(float(acc), 6))
        self._write()

    @rank_zero_only
    def _write(self) -> None:
        doc = {"epochs": self.epochs, "val_acc": self.val_acc, "configured": self.configured}
        self.path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
