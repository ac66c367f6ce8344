"""A Lightning callback that records when every training step ends, and its loss.

Shared by the overhead benchmark's runs: the hand-written Lightning script adds it to its
Trainer, visionkit gets it from a throwaway plugin's ``visionkit_configure_trainer`` hook.
The raw PyTorch loop records the same fields itself. Written to ``path`` as JSON when
training ends: ``epoch_start`` (one time per epoch); ``step_end``, ``step_cpu`` (process CPU
seconds), ``step_epoch`` and ``loss`` (one entry per optimizer step); and ``train_end``.
Wall times are ``time.perf_counter()`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback
from recipe import empty_record, save_record


class StepTimer(Callback):
    def __init__(self, path: str) -> None:
        self.path = path
        self.record = empty_record()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.record["epoch_start"].append(time.perf_counter())

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.record["loss"].append(float(loss))
        self.record["step_end"].append(time.perf_counter())
        self.record["step_cpu"].append(time.process_time())
        self.record["step_epoch"].append(int(trainer.current_epoch))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.record["train_end"] = time.perf_counter()
        save_record(self.path, self.record)
