"""SigtermCheckpoint: SIGTERM mid-fit saves last.ckpt at that step; the core's one-line error says so."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from visionkit_callbacks.defaults import best_checkpoint
from visionkit_callbacks.sigterm import SigtermCheckpoint

from visionkit_core.errors import Terminated
from visionkit_core.run.report import terminated
from visionkit_core.training.checkpoint import safe_load


class StoppedAtStep3(L.LightningModule):
    """A linear model whose fourth training step is where Lightning noticed SIGTERM."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == 3:
            raise SIGTERMException()
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(run_dir: Path, callbacks: list[L.Callback], checkpointing: bool = True) -> L.Trainer:
    return L.Trainer(
        enable_checkpointing=checkpointing,
        max_epochs=1,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=run_dir,
    )


def test_sigterm_saves_last_ckpt_and_the_core_reports_it(tmp_path: Path) -> None:
    data = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=2)
    trainer = _trainer(tmp_path, [best_checkpoint(tmp_path, monitor="train/loss"), SigtermCheckpoint()])
    try:
        trainer.fit(StoppedAtStep3(), train_dataloaders=data)
    except SIGTERMException:
        pass
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert safe_load(last)["global_step"] == 3
    err = terminated(trainer, tmp_path)
    assert isinstance(err, Terminated) and err.exit_code == 143
    assert str(err) == (
        f"stopped by SIGTERM at step 3; saved {last}; "
        f"continue with: visionkit train --resume last --run-dir {tmp_path}"
    )


def test_sigterm_without_a_checkpoint_callback_saves_nothing(tmp_path: Path) -> None:
    data = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=2)
    trainer = _trainer(tmp_path, [SigtermCheckpoint()], checkpointing=False)
    try:
        trainer.fit(StoppedAtStep3(), train_dataloaders=data)
    except SIGTERMException:
        pass
    assert not list(tmp_path.rglob("*.ckpt"))
    assert "before training started; nothing new to save" in str(terminated(trainer, tmp_path))
