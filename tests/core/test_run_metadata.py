"""RunMetadata: every checkpoint carries the run's "visionkit" entry and plain hyperparameters."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionkit_core.training.checkpoint import META_KEY, safe_load
from visionkit_core.training.runtime import RunMetadata


class PathHparams(L.LightningModule):
    """A task whose hyperparameters hold a ``Path`` (torch's safe loader refuses one)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_checkpoints_hold_the_metadata_and_plain_hyperparameters(tmp_path: Path) -> None:
    trainer = L.Trainer(
        max_steps=1,
        callbacks=[RunMetadata({"task": "t", "data": tmp_path, "sizes": (1, 2)})],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(PathHparams(tmp_path / "data"), train_dataloaders=DataLoader(TensorDataset(torch.ones(2, 2))))
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    ckpt = safe_load(tmp_path / "a.ckpt")  # weights_only=True: a Path anywhere would be refused
    assert ckpt["hyper_parameters"]["root"] == str(tmp_path / "data")
    assert ckpt[META_KEY] == {"task": "t", "data": str(tmp_path), "sizes": (1, 2)}
