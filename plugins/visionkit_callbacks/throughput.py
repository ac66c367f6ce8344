"""Training images per second, reported in ``summary.json`` as ``train_images_per_s``."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from visionkit_core.training.runtime import batch_size_of


class ThroughputCallback(Callback):
    """Measures training images per second (training batches only, after the first epoch's warm-up)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._t0: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            # the first batch of an epoch includes loader start-up; time from its end
            self._t0 = time.perf_counter()
            return
        if self._t0 is not None:
            now = time.perf_counter()
            self.seconds += now - self._t0
            self._t0 = now
            self.images += batch_size_of(batch)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def visionkit_summary(self, trainer: L.Trainer) -> dict[str, Any]:
        """``train_images_per_s`` of all ranks together (each rank measures its own share)."""
        return {"train_images_per_s": round(self.images_per_s * trainer.world_size, 2)}
