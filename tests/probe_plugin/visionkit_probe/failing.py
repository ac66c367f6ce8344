"""A callback that fails on one rank at one step: the rank-failure tests' fault."""

from __future__ import annotations

from typing import Any

import lightning as L


class FailOnRank(L.Callback):
    def __init__(self, rank: int = 1, step: int = 2) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise RuntimeError(f"probe callback failed on rank {self.rank} at step {self.step}")
