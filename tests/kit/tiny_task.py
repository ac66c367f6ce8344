"""A tiny task on the kit's TaskBase and its data, trained for real in the kit's tests (8 px, 4 steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from visionkit_core.kit.task import TaskBase


class Tiny(TaskBase):
    def __init__(
        self,
        num_classes: int = 3,
        class_names: list[str] | None = None,
        lr: float = 0.1,
        weight_decay: float = 0.01,
        pretrained: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers = [nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers, nn.Linear(4, num_classes))
        self.set_normalization([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
        self.seen_pretrained = pretrained
        self.last_eval_output: Any = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        assert images.dtype == torch.float32  # normalised on the device
        loss = F.cross_entropy(self.net(images), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        self.log("val/loss", F.cross_entropy(self.net(images), labels))
        self.last_eval_output = "logits"


def loader() -> DataLoader[Any]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=gen)
    return DataLoader(TensorDataset(images, torch.arange(16) % 3), batch_size=4)


def trainer(tmp_path: Path, epochs: int, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )
