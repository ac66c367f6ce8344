"""Guards every fit gets from this plugin: non-finite losses and weights, secrets in hyperparameters.

- :class:`NonFiniteGuard` stops at the first NaN/inf training loss, and refuses to write a
  checkpoint whose weights are not finite, so the last good checkpoint stays the last one.
- :class:`RedactSecrets` keeps secret-looking hyperparameters (``api_key``, ``hf_token``...)
  out of logger hyperparameters (``hparams.yaml``, wandb) and checkpoints.

Imports Lightning: imported by the plugin's hooks only when a Trainer is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from visionkit_core.errors import VisionkitError
from visionkit_core.run.config import redact

__all__ = ["NonFiniteError", "NonFiniteGuard", "RedactSecrets", "guard_callbacks"]


class NonFiniteError(VisionkitError):
    """The training loss (or the weights about to be saved) stopped being finite."""

    exit_code = 1


def _fixes(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    lr = getattr(pl_module, "hparams", {}).get("lr")
    tips = [f"a lower --lr (now {lr:g})" if isinstance(lr, (int, float)) else "a lower --lr"]
    if not trainer.gradient_clip_val:
        tips.append("gradient clipping (--set trainer.gradient_clip_val=1.0)")
    precision = str(trainer.precision)
    if precision.startswith("16") or precision.startswith("bf16"):
        tips.append(f"--precision 32 (now {precision})")
    return "likely fixes: " + ", ".join(tips)


class NonFiniteGuard(Callback):
    """Stop at the first non-finite training loss; never save non-finite weights.

    Losses are checked together every ``check_every`` steps (default: every step on the CPU; on
    an accelerator the Trainer's logging interval, when Lightning syncs anyway, so steps never
    wait for the device), and always before validation and before a checkpoint is saved. The
    error names the first bad step.
    """

    def __init__(self, check_every: int | None = None) -> None:
        self.check_every = check_every
        self._pending: list[tuple[int, int, int, torch.Tensor]] = []  # (step, epoch, batch, loss)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self._pending.append((trainer.global_step, trainer.current_epoch, batch_idx, loss.detach()))
        # a check on the CPU is free; on an accelerator it waits for the device, so it is batched
        every = self.check_every or (
            1 if loss.device.type == "cpu" else getattr(trainer, "log_every_n_steps", 1)
        )
        if len(self._pending) >= int(every or 1):
            self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Raise :class:`NonFiniteError` for the first non-finite loss seen since the last check."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        finite = torch.stack([torch.isfinite(loss).all() for *_, loss in pending]).tolist()  # one sync
        if all(finite):
            return
        step, epoch, batch_idx, loss = pending[finite.index(False)]
        value = float(loss.float().reshape(-1)[0])
        raise NonFiniteError(
            f"training loss became {value} at step {step} (epoch {epoch + 1}, batch {batch_idx + 1}); "
            "stopped without saving it, earlier checkpoints are unchanged; " + _fixes(trainer, pl_module)
        )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer, pl_module)
        # a finite loss can still be followed by an update that overflows the weights
        for name, param in pl_module.named_parameters():
            if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                raise NonFiniteError(
                    f"weight {name!r} is not finite at step {trainer.global_step}; refusing to save a "
                    "checkpoint, earlier checkpoints are unchanged; " + _fixes(trainer, pl_module)
                )


class RedactSecrets(Callback):
    """Keep secret-looking hyperparameters out of every logger and checkpoint.

    The module's live hyperparameters are left alone (it may need them); what loggers record
    (``hparams_initial``) and what checkpoints store (``hyper_parameters``) is redacted.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for obj in (pl_module, trainer.datamodule):  # type: ignore[attr-defined]
            initial = getattr(obj, "_hparams_initial", None)
            if initial:
                obj._hparams_initial = type(initial)(redact(dict(initial)))

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint[key] = redact(dict(checkpoint[key]))


def guard_callbacks() -> list[Callback]:
    """The guards every fit gets."""
    return [NonFiniteGuard(), RedactSecrets()]
