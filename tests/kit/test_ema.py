"""The kit's EMA: a task's default EMA validates on the average, checkpoints it and resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from visionkit_core.kit.ema import EMA, ema_callbacks


class WithEMA(BoringModel):  # type: ignore[misc]
    def __init__(self, ema: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()

    def configure_callbacks(self) -> list[Any]:
        return ema_callbacks(self, self.hparams.ema, 0.9)


def fit(tmp: Path, epochs: int, resume: str | None = None, callbacks: list[Any] | None = None) -> Any:
    L.seed_everything(0)
    model = WithEMA()
    trainer = L.Trainer(
        max_epochs=epochs, limit_train_batches=3, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp,
        callbacks=[ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True), *(callbacks or [])],
    )  # fmt: skip
    trainer.fit(model, ckpt_path=resume, weights_only=True)
    return trainer, model


def test_default_ema_validates_on_the_average_and_resumes_exactly(tmp_path: Path) -> None:
    trainer, model = fit(tmp_path / "a", 4)
    ema = [cb for cb in trainer.callbacks if isinstance(cb, EMA)]
    assert len(ema) == 1 and ema[0].decay == 0.9
    average = ema[0]._average_model.module.layer.weight
    assert torch.equal(model.layer.weight, average)  # the end of fit copies the average in
    # the checkpoint holds the average; the raw weights travel beside it for --resume
    state = torch.load(tmp_path / "a" / "ckpt" / "last.ckpt", weights_only=True)
    assert torch.equal(state["state_dict"]["layer.weight"], average)
    assert not torch.equal(state["current_model_state"]["layer.weight"], average)

    fit(tmp_path / "b", 2)
    _, resumed = fit(tmp_path / "b", 4, resume=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    again = torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=True)
    for key in ("state_dict", "current_model_state"):
        assert torch.equal(again[key]["layer.weight"], state[key]["layer.weight"]), key
    assert torch.equal(resumed.layer.weight, model.layer.weight)


def test_a_users_ema_wins_and_the_option_turns_it_off(tmp_path: Path) -> None:
    mine = EMA(0.5)
    trainer, _ = fit(tmp_path, 1, callbacks=[mine])
    assert [cb for cb in trainer.callbacks if isinstance(cb, EMA)] == [mine]
    model = WithEMA(ema=False)
    assert ema_callbacks(model, False) == []
    assert ema_callbacks(WithEMA(), True) == []  # no trainer: not fitting
    with pytest.raises(ValueError, match="between 0 and 1"):
        EMA(1.0)
