"""Segmentation plots on the kit's evaluation callback, written to ``<run_dir>/plots/``.

- ``training_curves.png`` + ``history.csv`` (after every epoch): loss, mIoU and pixel accuracy;
- ``segmentation_samples.png`` (end of fit): rows of image | truth | prediction for the first
  few validation images of the last epoch, from the task's own validation forward;
- ``per_class_iou.png`` + ``per_class_iou.csv``: the last validation epoch's IoU per class.

Rank zero writes; TensorBoard and wandb loggers get the figures as ``plots/<name>``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import lightning as L

from visionkit_core import write_csv
from visionkit_core.kit.evaluation import EvaluationCallback, history_columns
from visionkit_core.kit.plots import media_grid, per_class_bars

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLES = 6


class SegmentationPlots(EvaluationCallback):
    """Curves every epoch; a few validation samples and per-class IoU bars at the end of fit."""

    columns = history_columns("val/loss", "val/miou", "val/pixel_acc")
    default_samples = SAMPLES
    panels = (("loss", ("train/loss", "val/loss")), ("score", ("val/miou", "val/pixel_acc")))

    def media(self, pl_module: Any, stored: Any, limit: int) -> list[Any]:
        images, truth, pred = stored  # the task's last_eval_output: model input, truth, prediction
        return pl_module.draw_samples(images[:limit], truth, pred)  # type: ignore[no-any-return]

    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Figure]:
        names = list(pl_module.class_names)
        iou = list(pl_module.last_iou.get("val", []))
        figures = {}
        if self.samples:
            figures["segmentation_samples"] = media_grid(self.samples, names)
        if iou:
            values = dict(zip(names, iou, strict=True))
            rows = [[n, i, "" if math.isnan(v) else f"{v:.6f}"] for i, (n, v) in enumerate(values.items())]
            write_csv(self.plots_dir / "per_class_iou.csv", ["class", "index", "iou"], rows)
            figures["per_class_iou"] = per_class_bars(values, "IoU (last validation epoch)")
        return figures
