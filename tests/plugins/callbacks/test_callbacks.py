"""Default callbacks (checkpoints, LR monitor, progress), early-stopping and the wandb-images callback."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from visionkit_callbacks.defaults import checkpoint_callback, default_callbacks, early_stopping
from visionkit_callbacks.progress import EpochLineProgressBar, epoch_metrics, progress_bar
from visionkit_loggers.local import csv_logger
from visionkit_wandb_images.callback import WandbImagesCallback, sampling_plan
from visionkit_wandb_images.render import captions, to_display

from visionkit_core.errors import ConfigError
from visionkit_core.plugin.manager import load_plugins
from visionkit_core.run.build import call_with_accepted
from visionkit_core.run.config import check_options

CALLBACK_PLUGINS = ("visionkit_callbacks.plugin", "visionkit_wandb_images.plugin")


class TinyClassifier(L.LightningModule):
    """Two classes of 8x8 RGB uint8 images, normalised on the device like visionkit's tasks."""

    def __init__(self, class_names: tuple[str, ...] = ("dark", "bright"), lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, len(class_names)))

    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = batch
        return (images.float() / 255.0 - 0.5) / 0.25, labels

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        return images * 0.25 + 0.5

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _shared_step(self, batch):
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels), (logits.argmax(dim=1) == labels).float().mean()

    def training_step(self, batch, batch_idx):
        loss, _ = self._shared_step(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self._shared_step(batch)
        self.log("val/loss", loss)
        self.log("val/acc", acc, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def tiny_loaders(n: int = 32) -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127.5).long()
    data = TensorDataset(images, labels)
    return DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=8)


def tiny_fit(run_dir: Path, callbacks, *, logger=False, epochs: int = 1) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=logger,
        callbacks=list(callbacks),
        default_root_dir=run_dir,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, EpochLineProgressBar) for c in callbacks),
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    train, val = tiny_loaders()
    trainer.fit(TinyClassifier(), train, val)
    return trainer


def build_callback(name: str, run_dir: Path, **options):
    """Build a callback the way the assembler does: resolve, check options, call the factory."""
    comp = load_plugins(builtins=CALLBACK_PLUGINS, autoload=False, strict=True).registry.resolve(
        "callback", name
    )
    factory = comp.load()
    check_options(
        "callback", comp.qualname, factory, options, {"run_dir": "--run-dir", "class_names": "data"}
    )
    return call_with_accepted(factory, {"run_dir": run_dir, "class_names": ["dark", "bright"]}, options)


# -- default callbacks ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """A 2-epoch fit with the default callbacks, no logger, and a line progress bar."""
    run_dir = tmp_path_factory.mktemp("defaults") / "run"
    stream = io.StringIO()
    trainer = tiny_fit(
        run_dir, [*default_callbacks(run_dir, progress=False), EpochLineProgressBar(stream)], epochs=2
    )
    return run_dir, trainer, stream.getvalue()


def test_checkpoints_are_best_and_last_flat_in_the_run_dir(two_epoch_run):
    run_dir, _, _ = two_epoch_run
    ckpt_dir = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir()) == []
    names = sorted(p.name for p in ckpt_dir.glob("*.ckpt"))
    best = [n for n in names if n.startswith("best-")]
    assert "last.ckpt" in names and len(best) == 1
    assert re.fullmatch(r"best-epoch=\d{2}-val_acc=\d\.\d{4}\.ckpt", best[0])


def test_checkpoint_callback_finds_the_model_checkpoint(two_epoch_run):
    run_dir, trainer, _ = two_epoch_run
    ckpt = checkpoint_callback(trainer.callbacks)
    assert isinstance(ckpt, ModelCheckpoint)
    assert Path(ckpt.best_model_path).parent == run_dir / "checkpoints"
    assert checkpoint_callback([EarlyStopping(monitor="val/loss")]) is None


def test_lr_monitor_runs_without_a_logger(two_epoch_run):
    _, trainer, _ = two_epoch_run
    assert trainer.logger is None and trainer.current_epoch == 2


def test_lr_monitor_logs_the_learning_rate_with_a_logger(tmp_path):
    run_dir = tmp_path / "run"
    tiny_fit(run_dir, default_callbacks(run_dir, progress=False), logger=csv_logger(run_dir))
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lr-SGD"]) for r in rows if r.get("lr-SGD")] == [0.05]


def test_line_progress_prints_one_line_per_epoch(two_epoch_run):
    _, _, output = two_epoch_run
    lines = output.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["Epoch 1/2", "Epoch 2/2"]
    assert all("train/loss " in line and "val/acc " in line for line in lines)


def test_progress_bar_is_rich_on_a_terminal_and_lines_when_piped(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert isinstance(progress_bar(), EpochLineProgressBar)
    monkeypatch.setattr("sys.stdout", Terminal())
    assert isinstance(progress_bar(), RichProgressBar)
    assert not any(
        isinstance(c, (EpochLineProgressBar, RichProgressBar))
        for c in default_callbacks(Path("r"), progress=False)
    )


def test_epoch_metrics_show_epoch_values_under_their_plain_name():
    shown = epoch_metrics({"train/loss_step": 0.9, "train/loss_epoch": 0.5, "val/acc": 1.0, "v_num": 3})
    assert shown == {"train/loss": "0.5000", "v_num": "3", "val/acc": "1.0000"}


# -- early stopping -------------------------------------------------------------------


def test_early_stopping_factory_honours_options(tmp_path):
    stopper = build_callback(
        "early-stopping", tmp_path, monitor="val/acc", mode="max", patience=2, min_delta=0.1
    )
    assert isinstance(stopper, EarlyStopping)
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/acc", "max", 2)
    assert abs(stopper.min_delta) == pytest.approx(0.1)
    default = early_stopping()
    assert (default.monitor, default.mode, default.patience, default.min_delta) == ("val/loss", "min", 5, 0.0)


def test_early_stopping_stops_a_run_that_does_not_improve(tmp_path):
    stopper = build_callback(
        "early-stopping", tmp_path, monitor="val/acc", mode="max", patience=1, min_delta=10.0
    )
    trainer = tiny_fit(tmp_path / "run", [stopper], epochs=10)
    assert trainer.current_epoch == 2 and stopper.stopped_epoch == 1


def test_early_stopping_rejects_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'patience'"):
        build_callback("early-stopping", tmp_path, patiense=3)
    with pytest.raises(ConfigError, match="'min' or 'max'"):
        build_callback("early-stopping", tmp_path, mode="largest")


# -- wandb-images ---------------------------------------------------------------------


def test_wandb_images_saves_the_prediction_grid_as_png(tmp_path):
    run_dir = tmp_path / "run"
    tiny_fit(run_dir, [build_callback("wandb-images", run_dir, num_samples=4)])
    png = run_dir / "plots" / "val_predictions.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((run_dir / "plots").glob(".*.tmp"))


def test_wandb_images_logs_only_every_n_epochs(tmp_path):
    run_dir = tmp_path / "run"
    tiny_fit(run_dir, [build_callback("wandb-images", run_dir, every_n_epochs=2)], epochs=1)
    assert not (run_dir / "plots").exists()


def test_wandb_images_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="num_samples=0"):
        build_callback("wandb-images", tmp_path, num_samples=0)
    with pytest.raises(ConfigError, match="set by data"):
        build_callback("wandb-images", tmp_path, class_names=["a"])


def test_wandb_images_samples_span_the_validation_set_not_its_first_batch(tmp_path):
    class Recording(WandbImagesCallback):
        def log_predictions(self, trainer, images, preds, labels):
            self.logged.append((images.shape, labels))
            super().log_predictions(trainer, images, preds, labels)

    callback = Recording(num_samples=4, run_dir=tmp_path)
    callback.logged = []
    train, val = tiny_loaders()
    images, labels = val.dataset.tensors
    order = labels.argsort(stable=True)  # a class-sorted validation set, like ImageFolder's
    sorted_val = DataLoader(TensorDataset(images[order], labels[order]), batch_size=8)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        callbacks=[callback],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(TinyClassifier(), train, sorted_val)
    [(shape, logged_labels)] = callback.logged
    assert shape == (4, 8, 8, 3)
    assert sorted(set(logged_labels)) == [0, 1]


def test_sampling_plan_spreads_samples_over_evenly_spaced_batches():
    assert sampling_plan(4, 16) == {0: 4, 1: 4, 2: 4, 3: 4}
    assert sampling_plan(100, 4) == {0: 1, 33: 1, 66: 1, 99: 1}
    assert sampling_plan(6, 16) == dict.fromkeys(range(6), 3)
    assert sampling_plan(1, 16) == sampling_plan(float("inf"), 16) == {0: 16}


def test_images_for_display_use_denormalize_or_min_max_scaling():
    images = torch.tensor([-2.0, 0.0, 2.0, 4.0]).reshape(1, 1, 2, 2)
    scaled = to_display(nn.Identity(), images)  # no denormalize: per-image min-max
    assert scaled.shape == (1, 2, 2) and scaled.ravel().tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    grey = to_display(TinyClassifier(), torch.zeros(2, 3, 4, 4))  # denormalize: normalised 0 -> 0.5
    assert grey.shape == (2, 4, 4, 3) and grey.min() == grey.max() == 0.5

    class Uint8Module(nn.Module):
        def denormalize(self, x):
            return torch.full_like(x, 255, dtype=torch.uint8)

    assert to_display(Uint8Module(), images).max() == 1.0


def test_captions_name_classes_and_fall_back_to_the_index():
    assert captions([1, 0], [1, 1], ["dark", "bright"]) == [
        "pred: bright / true: bright",
        "pred: dark / true: bright",
    ]
    assert captions([2], [0], None) == ["pred: 2 / true: 0"]


def test_class_names_come_from_the_module_hparams_first():
    callback = WandbImagesCallback(class_names=["a", "b"])
    assert callback.class_names_for(TinyClassifier(class_names=("x", "y"))) == ["x", "y"]
    assert callback.class_names_for(nn.Linear(1, 1)) == ["a", "b"]


def test_last_ckpt_is_the_newest_state_even_when_the_metric_stops_improving(tmp_path: Path) -> None:
    # mode="min" on an accuracy that rises: only epoch 0 is ever "best"
    callbacks = default_callbacks(tmp_path, monitor="val/loss", mode="max", progress=False)
    trainer = tiny_fit(tmp_path, callbacks, epochs=3)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == trainer.global_step and ckpt["epoch"] == 2
    (best,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    assert torch.load(best, map_location="cpu", weights_only=True)["global_step"] < trainer.global_step


def test_best_and_last_of_one_step_are_one_file_written_once(tmp_path: Path) -> None:
    # monitor "epoch", mode "min": epoch 0 is best (one state, two names), no later epoch is
    callbacks = default_callbacks(tmp_path, monitor="epoch", mode="min", progress=False)
    tiny_fit(tmp_path, callbacks, epochs=1)
    last = tmp_path / "checkpoints" / "last.ckpt"
    (best,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    assert os.path.samefile(best, last) and last.stat().st_nlink == 2 and not last.is_symlink()
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # no temporary file left behind

    again = tmp_path / "again"
    trainer = tiny_fit(again, default_callbacks(again, monitor="epoch", mode="min", progress=False), epochs=2)
    last, (best,) = again / "checkpoints" / "last.ckpt", (again / "checkpoints").glob("best-*.ckpt")
    assert not os.path.samefile(best, last)  # epoch 1 is not best: last.ckpt is its own, newer file
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == trainer.global_step
