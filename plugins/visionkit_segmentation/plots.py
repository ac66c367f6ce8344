"""Segmentation plots at the end of fit: an overlay grid and per-class IoU, as files and to loggers.

``run_dir/plots/segmentation_samples.png``: rows of image | truth | prediction for the first
few validation images of the last epoch (taken from the task's own validation forward, no
second pass); ``run_dir/plots/per_class_iou.png`` and ``per_class_iou.csv``: the last
validation epoch's IoU per class. Written on rank zero only, with matplotlib's Agg canvas
(no pyplot state), atomically; TensorBoard and wandb loggers get the same figures.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from visionkit_core import atomic_write_bytes
from visionkit_segmentation.outputs import colourise

SAMPLES = 6
GRID = "segmentation_samples.png"
BARS = "per_class_iou.png"
TABLE = "per_class_iou.csv"


class SegmentationPlots(Callback):
    """Keeps a few validation samples each epoch; writes and logs the plots when fit ends."""

    def __init__(self, run_dir: Path, num_samples: int = SAMPLES) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.num_samples = num_samples
        self._samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    @property
    def plots_dir(self) -> Path:
        return self.run_dir / "plots"

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._samples = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or len(self._samples) >= self.num_samples:
            return
        last = getattr(pl_module, "last_eval_output", None)
        if last is None:
            return
        images, masks, preds = last
        shown = (pl_module.denormalize(images[: self.num_samples]) * 255).round().to(torch.uint8)
        for img, true, pred in zip(shown, masks, preds, strict=False):
            if len(self._samples) >= self.num_samples:
                break
            self._samples.append((img.permute(1, 2, 0).cpu().numpy(), true.cpu().numpy(), pred.cpu().numpy()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        names = list(pl_module.class_names)
        iou = list(pl_module.last_iou.get("val", []))
        figures = {}
        if self._samples:
            figures["val/segmentation_samples"] = self._save(sample_grid(self._samples), GRID)
        if iou:
            figures["val/per_class_iou"] = self._save(iou_bars(names, iou), BARS)
            write_iou_csv(self.plots_dir / TABLE, names, iou)
        log_figures(trainer, figures)

    def _save(self, fig: Any, name: str) -> Any:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        atomic_write_bytes(self.plots_dir / name, buffer.getvalue())
        return fig


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def sample_grid(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Any:
    """Rows of image | truth | prediction (masks in the class colours, 255 white)."""
    fig = _figure(6.0, 2.0 * len(samples))
    axes = fig.subplots(len(samples), 3, squeeze=False)
    for row, (image, true, pred) in enumerate(samples):
        for col, (picture, title) in enumerate(
            ((image, "image"), (colourise(true), "truth"), (colourise(pred), "prediction"))
        ):
            ax = axes[row][col]
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    return fig


def iou_bars(names: list[str], iou: list[float]) -> Any:
    """Horizontal bars of IoU per class; a class absent from truth and prediction is marked n/a."""
    fig = _figure(6.0, 0.8 + 0.3 * len(names))
    ax = fig.subplots()
    values = [0.0 if math.isnan(v) else v for v in iou]
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU (last validation epoch)")
    for i, v in enumerate(iou):
        ax.text(
            min(values[i], 0.9) + 0.01, i, "n/a" if math.isnan(v) else f"{v:.2f}", va="center", fontsize=7
        )
    return fig


def write_iou_csv(path: Path, names: list[str], iou: list[float]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["class", "index", "iou"])
    for i, (name, value) in enumerate(zip(names, iou, strict=True)):
        writer.writerow([name, i, "" if math.isnan(value) else f"{value:.6f}"])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def figure_array(fig: Any) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array (what wandb.Image takes without guessing)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def log_figures(trainer: L.Trainer, figures: dict[str, Any]) -> None:
    """Send each figure to the TensorBoard and wandb loggers of ``trainer`` (others are skipped)."""
    if not figures:
        return
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            for key, fig in figures.items():
                logger.experiment.add_figure(key, fig, global_step=step, close=False)
        elif isinstance(logger, WandbLogger):
            for key, fig in figures.items():
                logger.log_image(key=key, images=[figure_array(fig)], step=step)
