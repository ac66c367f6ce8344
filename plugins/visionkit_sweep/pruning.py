"""Report the task's monitored metric to Optuna after every validation epoch, and stop a pruned run.

Optuna-integration's ``PyTorchLightningPruningCallback`` raises ``TrialPruned`` inside
``Trainer.fit`` (on one process), which leaves the trial without ``summary.json`` and with
its loggers cut off. This callback instead asks the Trainer to stop (``should_stop``), so a
pruned trial ends like any run (last checkpoint, summary.json, plots) and the sweep marks it
pruned afterwards. Imported only inside a trial (it imports Lightning).
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch.callbacks import Callback


class OptunaPruning(Callback):
    """Report ``monitor`` at each epoch's validation (step = epoch); stop when the pruner says so.

    The last epoch is never pruned: a trial that reaches it completes.
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None
        self._reported: set[int] = set()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch)
        value = trainer.callback_metrics.get(self.monitor)
        decision = False
        if trainer.is_global_zero and value is not None and epoch not in self._reported:
            value = float(value)
            if math.isfinite(value):
                self._reported.add(epoch)
                self.trial.report(value, step=epoch)
                last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
                decision = not last and self.trial.should_prune()
        if trainer.world_size > 1:  # every rank stops together
            decision = bool(trainer.strategy.broadcast(decision, src=0))
        if decision:
            self.pruned_at = epoch
            trainer.should_stop = True
