"""Detection plots, written to ``<run_dir>/plots/`` and sent to TensorBoard / wandb.

- ``training_curves.png`` + ``history.csv`` (after every epoch): train loss and val mAP;
- ``detection_samples.png`` (end of fit): validation images of the last epoch with the true
  boxes (green) and the predicted ones (red, score >= 0.3), from the task's own validation
  forward (no second pass);
- ``per_class_ap.png`` + ``per_class_ap.csv`` (end of fit): AP@[.5:.95] per class of the
  last validation.

Rank zero writes; a failing plot warns and never fails a finished run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from visionkit_core import log_figure, never_fail, new_figure, save_png, write_csv
from visionkit_detection.outputs import SHOW_THRESHOLD, media_samples

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLES = 8
HISTORY = ("train/loss", "val/map", "val/map_50", "val/map_75")


class DetectionPlots(Callback):
    """Curves every epoch; a sample grid and per-class AP bars at the end of fit."""

    def __init__(self, run_dir: str | Path, num_samples: int = SAMPLES) -> None:
        self.plots_dir = Path(run_dir) / "plots"
        self.num_samples = num_samples
        self.history: list[dict[str, float | None]] = []
        self._samples: list[Any] = []
        self._collecting = False

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collecting = not trainer.sanity_checking and trainer.is_global_zero
        if self._collecting:
            self._samples = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        stored = getattr(pl_module, "last_eval_output", None)
        pl_module.last_eval_output = None  # type: ignore[attr-defined]
        if not self._collecting or stored is None or len(self._samples) >= self.num_samples:
            return
        images, targets, preds = stored
        take = self.num_samples - len(self._samples)
        self._samples += media_samples(images[:take], targets[:take], preds[:take])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: dict[str, float | None] = {"epoch": float(trainer.current_epoch)}
        for key in HISTORY:
            row[key] = float(metrics[key]) if key in metrics else None
        self.history.append(row)
        if trainer.is_global_zero:
            never_fail("training curves", self._write_history)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            never_fail("plots", self.write, trainer, pl_module)

    def _write_history(self) -> Figure | None:
        if not self.history:
            return None
        columns = ["epoch", *HISTORY]
        rows = [[_cell(r.get(c)) for c in columns] for r in self.history]
        write_csv(self.plots_dir / "history.csv", columns, rows)
        fig = new_figure(9, 3.8)
        for ax, keys, title in zip(
            fig.subplots(1, 2), (("train/loss",), ("val/map", "val/map_50", "val/map_75")), ("loss", "mAP"),
            strict=True,
        ):  # fmt: skip
            for key in keys:
                pts = [(r["epoch"], r[key]) for r in self.history if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=key)
            ax.set(title=title, xlabel="epoch")
            if ax.lines:
                ax.legend()
            ax.grid(alpha=0.3)
        save_png(fig, self.plots_dir / "training_curves.png")
        return fig

    def write(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Path]:
        """Write every plot and table; send the figures to ``trainer``'s loggers when given."""
        figures: dict[str, Figure] = {}
        curves = self._write_history()
        if curves is not None:
            figures["training_curves"] = curves
        names = [str(n) for n in getattr(pl_module, "class_names", [])]
        ap = dict(getattr(pl_module, "last_ap", {}).get("val", {}))
        if ap:
            write_csv(
                self.plots_dir / "per_class_ap.csv", ["class", "ap"], [[n, _cell(v)] for n, v in ap.items()]
            )
            figures["per_class_ap"] = ap_bars(ap)
        if self._samples:
            figures["detection_samples"] = sample_grid(self._samples, names)
        paths = {name: self.plots_dir / f"{name}.png" for name in figures}
        for name, fig in figures.items():
            if name != "training_curves":
                save_png(fig, paths[name])
            if trainer is not None:
                log_figure(trainer, name, fig, paths[name])
        return paths


def _cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) or value < 0 else f"{value:.6g}"


def ap_bars(ap: dict[str, float]) -> Figure:
    """Horizontal bars of AP@[.5:.95] per class; a class in neither truth nor prediction is n/a."""
    names = list(ap)
    fig = new_figure(6.0, 0.9 + 0.3 * len(names))
    ax = fig.subplots()
    values = [max(0.0, v) for v in ap.values()]
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    present = [v for v in ap.values() if v >= 0]
    mean = sum(present) / len(present) if present else 0.0
    ax.set(xlim=(0, 1), xlabel="AP@[.5:.95] (last validation)", title=f"Per-class AP (mAP {mean:.3f})")
    for i, v in enumerate(ap.values()):
        ax.text(min(max(v, 0.0), 0.9) + 0.01, i, "n/a" if v < 0 else f"{v:.2f}", va="center", fontsize=7)
    return fig


def sample_grid(samples: list[Any], names: list[str]) -> Figure:
    """Validation images with true boxes (green) and predicted boxes (red, with scores)."""
    from matplotlib.patches import Rectangle

    cols = min(4, len(samples))
    rows = math.ceil(len(samples) / cols)
    fig = new_figure(2.6 * cols, 2.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(samples):
            continue
        s = samples[i]
        ax.imshow(s.image, interpolation="nearest")
        ax.set_title(s.caption, fontsize=8, color="tab:green" if s.correct else "tab:red")
        for boxes, labels, scores, colour in (
            (s.true_boxes, s.true_labels, None, "tab:green"),
            (s.pred_boxes, s.pred_labels, s.pred_scores, "tab:red"),
        ):
            for j, (x0, y0, x1, y1) in enumerate(boxes or []):
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1))
                label = labels[j] if labels and j < len(labels) else -1
                text = names[label] if 0 <= label < len(names) else str(label)
                if scores is not None:
                    text += f" {scores[j]:.2f}"
                ax.text(x0, y0, text, color=colour, fontsize=6, va="bottom")
    fig.suptitle(f"green: truth, red: prediction (score >= {SHOW_THRESHOLD})", fontsize=9)
    return fig
