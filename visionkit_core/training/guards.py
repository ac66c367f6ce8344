"""Callbacks that keep a run's results safe: non-finite losses, SIGTERM, secrets in hyperparameters.

- :class:`NonFiniteGuard` stops at the first NaN/inf training loss, and refuses to write a
  checkpoint whose weights are not finite, so the last good checkpoint stays the last one.
- :class:`SigtermCheckpoint` writes ``last.ckpt`` when Lightning stops for SIGTERM (it
  saves nothing itself and exits 0); the assembler then raises :class:`Terminated` (exit 143).
- :class:`RedactSecrets` keeps secret-looking hyperparameters (``api_key``, ``hf_token``...)
  out of logger hyperparameters (``hparams.yaml``, wandb) and checkpoints.

Imported only by the assembler (it imports Lightning).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from visionkit_core.errors import VisionkitError
from visionkit_core.run.config import redact

__all__ = [
    "NonFiniteError",
    "NonFiniteGuard",
    "RedactSecrets",
    "SIGTERMException",
    "SigtermCheckpoint",
    "Terminated",
    "guard_callbacks",
    "terminated",
]

#: 128 + SIGTERM, what a shell reports for a process that SIGTERM ended.
SIGTERM_EXIT_CODE = 143


class NonFiniteError(VisionkitError):
    """The training loss (or the weights about to be saved) stopped being finite."""

    exit_code = 1


class Terminated(VisionkitError):
    """The run stopped because it received SIGTERM (after saving ``last.ckpt``)."""

    exit_code = SIGTERM_EXIT_CODE


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


def _last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    ckpt = next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)  # type: ignore[attr-defined]
    if ckpt is None or not ckpt.dirpath:
        return None
    return Path(ckpt.dirpath) / f"{ckpt.CHECKPOINT_NAME_LAST}{ckpt.FILE_EXTENSION}"


class SigtermCheckpoint(Callback):
    """Write ``last.ckpt`` when SIGTERM stops the run, so ``--resume last`` continues from there.

    Lightning notes SIGTERM and raises ``SIGTERMException`` at the next batch boundary; this
    saves the state at that point (atomically, through the Trainer's checkpoint I/O). On SLURM
    with auto-requeue, Lightning's own handler additionally saves and requeues.
    """

    def __init__(self) -> None:
        self.saved: Path | None = None
        self.step = 0
        self.error: str | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        path = _last_checkpoint_path(trainer)
        if path is None:
            return
        try:  # an exception here would skip Lightning's teardown: report it instead
            trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume from
        except VisionkitError as err:
            self.error = str(err)
            return
        self.saved, self.step = path, trainer.global_step


def terminated(callbacks: list[Any], run_dir: Path) -> Terminated:
    """The one-line error for a run SIGTERM stopped: what was saved and how to continue."""
    guard = next((cb for cb in callbacks if isinstance(cb, SigtermCheckpoint)), None)
    resume = f"continue with: visionkit train --resume last --run-dir {run_dir}"
    if guard is not None and guard.saved is not None:
        return Terminated(f"stopped by SIGTERM at step {guard.step}; saved {guard.saved}; {resume}")
    if guard is not None and guard.error:
        return Terminated(f"stopped by SIGTERM; {guard.error}")
    return Terminated(f"stopped by SIGTERM before training started; nothing new to save; {resume}")


#: Hyperparameter names that hold credentials: ``api_key``, ``hf_token``, ``db_password``...
#: (whole trailing words only, so ``num_tokens`` or ``token_dropout`` stay readable).


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
    """The guards every run gets."""
    return [NonFiniteGuard(), SigtermCheckpoint(), RedactSecrets()]
