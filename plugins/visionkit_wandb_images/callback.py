"""The ``wandb-images`` callback: sample validation predictions, shown as captioned images.

Despite the name it serves every logger it knows: wandb gets an image list, TensorBoard a
figure, and ``<run_dir>/plots/val_predictions.png`` is always written, so CSV-only runs see
the predictions too. Other loggers are skipped.

Any task works: when the module has ``media_samples(batch, limit)`` (the task contract), its
:class:`~visionkit_core.MediaSample` objects are shown — segmentation masks as wandb mask
overlays (``ground_truth`` / ``prediction``), boxes as wandb boxes, keypoints drawn into the
image (truth green, prediction red), plain captions otherwise. A module without it is treated
as a classifier: ``(images, {"label": labels})`` batches (or the deprecated ``(images, labels)``)
and logits.

Samples are spread over the validation epoch (a few images from evenly spaced batches), not
taken from its first batch only: validation sets are usually ordered by class, so a first
batch would show a single class.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from visionkit_core import ConfigError, MediaSample
from visionkit_wandb_images.render import (
    captions,
    draw_keypoints,
    media_grid,
    prediction_grid,
    save_png,
    split_batch,
    to_display,
    to_uint8,
    wandb_media,
)

KEY = "val/predictions"
PNG_NAME = "val_predictions.png"


def sampling_plan(num_batches: int | float, num_samples: int) -> dict[int, int]:
    """``{batch_idx: images to take}``: evenly spaced batches of the first validation loader."""
    if not isinstance(num_batches, int) or num_batches <= 1:
        return {0: num_samples}  # unknown length (iterable dataset) or a single batch
    k = min(num_samples, num_batches)
    per_batch = math.ceil(num_samples / k)
    if k == 1:
        return {0: per_batch}
    return {round(i * (num_batches - 1) / (k - 1)): per_batch for i in range(k)}


class WandbImagesCallback(Callback):
    """Every ``every_n_epochs`` epochs, log ``num_samples`` validation images captioned
    ``pred: <class> / true: <class>`` (sanity-check validation is skipped).

    ``run_dir`` and ``class_names`` are supplied by visionkit; class names come from
    ``pl_module.hparams.class_names`` first, then ``class_names``, then the class index.
    """

    def __init__(
        self,
        num_samples: int = 16,
        every_n_epochs: int = 1,
        *,
        run_dir: Path | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        for option, value in (("num_samples", num_samples), ("every_n_epochs", every_n_epochs)):
            if int(value) < 1:
                raise ConfigError(f"--set callback.wandb-images.{option}={value}: must be at least 1")
        self.num_samples = int(num_samples)
        self.every_n_epochs = int(every_n_epochs)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.class_names = list(class_names) if class_names else None
        self._plan: dict[int, int] = {}
        self._samples: list[Any] = []  # (images, preds, labels) tuples, or lists of MediaSample
        self._warned = False

    def png_path(self, trainer: L.Trainer) -> Path:
        """Where the grid is saved: ``<run_dir>/plots/val_predictions.png``."""
        return (self.run_dir or Path(trainer.default_root_dir)) / "plots" / PNG_NAME

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples = []
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if trainer.sanity_checking or not due:
            self._plan = {}
            return
        num_batches = trainer.num_val_batches[0] if trainer.num_val_batches else 0
        self._plan = sampling_plan(num_batches, self.num_samples)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        take = self._plan.get(batch_idx, 0) if dataloader_idx == 0 else 0
        if take:
            # Predict on every rank: with sharded strategies (FSDP) a forward pass is collective.
            sample = self._predict(pl_module, batch, take)
            if sample is not None:
                self._samples.append(sample)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples, self._samples, self._plan = self._samples, [], {}
        if not samples or not trainer.is_global_zero:
            return
        n = self.num_samples
        if isinstance(samples[0], list):
            self.log_media(trainer, [m for chunk in samples for m in chunk][:n])
            return
        images = np.concatenate([s[0] for s in samples])[:n]
        preds = [p for s in samples for p in s[1]][:n]
        labels = [t for s in samples for t in s[2]][:n]
        self.log_predictions(trainer, images, preds, labels)

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            rank_zero_warn(f"wandb-images: {message}; no prediction images are logged")

    def _predict(self, pl_module: L.LightningModule, batch: Any, take: int) -> Any:
        if callable(getattr(pl_module, "media_samples", None)):
            return self._media(pl_module, batch, take)
        split = split_batch(batch)
        if split is None:
            self._warn_once("the validation batch is not (images[N,C,H,W], labels[N])")
            return None
        images, labels = split
        # evenly spaced within the batch too, for the same reason as across batches
        spaced = np.linspace(0, len(images) - 1, num=min(take, len(images)))
        index = sorted({round(float(x)) for x in spaced})
        images, labels = images[index], labels[index]
        with torch.no_grad():
            logits = pl_module(images)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            self._warn_once("the module's forward did not return (N, num_classes) logits")
            return None
        return to_display(pl_module, images), logits.argmax(dim=1).tolist(), labels.tolist()

    def _media(self, pl_module: Any, batch: Any, take: int) -> list[MediaSample] | None:
        n = _batch_len(batch)
        if n is None:
            self._warn_once("the validation batch holds no (N, C, H, W) image tensor")
            return None
        # evenly spaced within the batch too, for the same reason as across batches
        index = sorted({round(float(x)) for x in np.linspace(0, n - 1, num=min(take, n))})
        with torch.no_grad():
            samples = pl_module.media_samples(_subset(batch, index, n), len(index))
        if not isinstance(samples, list) or not all(isinstance(s, MediaSample) for s in samples):
            self._warn_once("media_samples() did not return a list of visionkit_core.MediaSample")
            return None
        return samples

    def log_media(self, trainer: L.Trainer, samples: list[MediaSample]) -> None:
        """MediaSamples to each wandb / TensorBoard logger (masks and boxes included), and the PNG grid."""
        names = self.class_names_for(trainer.lightning_module)
        step = trainer.global_step
        fig = media_grid(samples, names)
        save_png(fig, self.png_path(trainer))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                images = [draw_keypoints(s) for s in samples]
                logger.log_image(key=KEY, images=images, step=step, **wandb_media(samples, names))
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(KEY, fig, global_step=step, close=False)

    def class_names_for(self, pl_module: L.LightningModule) -> list[str] | None:
        """``pl_module.hparams.class_names`` if set, else the names visionkit passed in."""
        names = getattr(pl_module, "hparams", {}).get("class_names")
        return list(names) if names else self.class_names

    def log_predictions(self, trainer: L.Trainer, images: Any, preds: list[int], labels: list[int]) -> None:
        """Send the images to each wandb / TensorBoard logger and save the PNG grid."""
        texts = captions(preds, labels, self.class_names_for(trainer.lightning_module))
        correct = [p == t for p, t in zip(preds, labels, strict=True)]
        step = trainer.global_step
        fig = prediction_grid(images, texts, correct)
        save_png(fig, self.png_path(trainer))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=KEY, images=to_uint8(images), caption=texts, step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(KEY, fig, global_step=step, close=False)


def _batch_len(batch: Any) -> int | None:
    """The number of samples in a batch: the first dim of its image tensor (dict ``image`` or item 0)."""
    if isinstance(batch, dict):
        images = next((batch[k] for k in ("image", "images") if k in batch), None)
    elif isinstance(batch, (list, tuple)) and batch:
        images = batch[0]
    else:
        images = batch
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return int(images.shape[0])
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], torch.Tensor):
        return len(images)  # a list of (C, H, W) images, e.g. detection
    return None


def _subset(batch: Any, index: list[int], n: int) -> Any:
    """The samples ``index`` of a batch: every per-sample entry (length ``n``) indexed, the rest kept."""

    def pick(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n:
            return value[index]
        if isinstance(value, dict):  # a batched Sample: each of its fields
            return {k: pick(v) for k, v in value.items()}
        if isinstance(value, list) and len(value) == n:
            return [value[i] for i in index]
        return value

    if isinstance(batch, dict):
        return {k: pick(v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(pick(v) for v in batch)
    if isinstance(batch, list):
        if len(batch) == n and all(isinstance(v, dict) for v in batch):  # one dict per sample
            return [batch[i] for i in index]
        return [pick(v) for v in batch]
    return pick(batch)
