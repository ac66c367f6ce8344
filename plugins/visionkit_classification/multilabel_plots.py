"""Evaluation plots of the ``multilabel`` task, written to ``<run_dir>/plots/``.

- ``training_curves.png`` + ``history.csv``: loss and ``val/map`` per epoch;
- ``per_class_ap.png`` + ``per_class_ap.csv``: average precision per class (bars), with the
  tuned threshold, precision and recall at it, and the number of positives;
- ``examples.png``: validation images captioned with their true and predicted label sets.

The per-class numbers are the task's ``eval_summary`` of the last validation; the examples
come from ``pl_module.last_eval_output = (probabilities, multi-hot targets)`` and the batch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from visionkit_core import log_figure, new_figure, prediction_grid, save_png, to_display, write_csv
from visionkit_core import never_fail as _never_fail

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: How many validation images the example grid shows.
EXAMPLES = 16
HISTORY = ("train/loss", "val/loss", "val/map", "val/f1_macro")


class MultilabelPlots(Callback):
    """Curves every epoch; per-class AP and an example grid at the end of fit (rank 0 writes)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.plots_dir = Path(run_dir) / "plots"
        self.history: list[dict[str, float | None]] = []
        self._examples: list[tuple[Any, list[int], list[float]]] = []
        self._collecting = False

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collecting = not trainer.sanity_checking
        if self._collecting:
            self._examples = []

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
        pl_module.last_eval_output = None
        if not self._collecting or stored is None or len(self._examples) >= EXAMPLES:
            return
        probs, hot = stored
        images = batch[0] if isinstance(batch, (list, tuple)) else None
        if not isinstance(images, torch.Tensor):
            return
        shown = to_display(pl_module, images[: EXAMPLES - len(self._examples)])
        for img, p, t in zip(shown, probs.cpu().tolist(), hot.cpu().tolist(), strict=False):
            self._examples.append((img, t, p))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: dict[str, float | None] = {"epoch": float(trainer.current_epoch)}
        for key in HISTORY:
            row[key] = float(metrics[key]) if key in metrics else None
        self.history.append(row)
        if trainer.is_global_zero:
            _never_fail("training curves", self._write_history)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            _never_fail("plots", self.write, trainer, pl_module)

    def _write_history(self) -> Figure | None:
        if not self.history:
            return None
        columns = ["epoch", *HISTORY]
        rows = [[_cell(r.get(c)) for c in columns] for r in self.history]
        write_csv(self.plots_dir / "history.csv", columns, rows)
        fig = new_figure(9, 3.8)
        for ax, keys, title in zip(
            fig.subplots(1, 2),
            (("train/loss", "val/loss"), ("val/map", "val/f1_macro")),
            ("loss", "score"),
            strict=True,
        ):
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
        summary = getattr(pl_module, "eval_summary", None)
        if summary and names:
            self._write_table(names, summary)
            figures["per_class_ap"] = per_class_ap_figure(names, summary)
        if self._examples and names:
            figures["examples"] = examples_figure(self._examples, names, summary)
        paths = {name: self.plots_dir / f"{name}.png" for name in figures}
        for name, fig in figures.items():
            if name != "training_curves":
                save_png(fig, paths[name])
            if trainer is not None:
                log_figure(trainer, name, fig, paths[name])
        return paths

    def _write_table(self, names: list[str], summary: dict[str, list[float]]) -> None:
        columns = ["class", "ap", "threshold", "precision", "recall", "positives"]
        rows = [
            [
                n,
                _cell(summary["ap"][i]),
                _cell(summary["threshold"][i]),
                _cell(summary["precision"][i]),
                _cell(summary["recall"][i]),
                str(summary["support"][i]),
            ]
            for i, n in enumerate(names)
        ]
        write_csv(self.plots_dir / "per_class_ap.csv", columns, rows)


def _cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6g}"


def per_class_ap_figure(names: list[str], summary: dict[str, list[float]]) -> Figure:
    """AP bars per class (a class without positives in validation shows none), recall dots at the
    tuned threshold, the threshold and positives under each name."""
    n = len(names)
    fig = new_figure(min(max(6.0, 0.7 * n + 2.0), 24.0), 4.5)
    ax = fig.subplots()
    x = np.arange(n)
    ap = np.nan_to_num(np.array(summary["ap"], dtype=float), nan=0.0)
    ax.bar(x, ap, width=0.6, label="average precision")
    ax.plot(x, summary["recall"], "o", color="black", label="recall at the threshold")
    labels = [
        f"{name}\nt={summary['threshold'][i]:.2f} n={summary['support'][i]}" for i, name in enumerate(names)
    ]
    if n <= 40:
        ax.set_xticks(x, labels, rotation=45 if n > 8 else 0, ha="right" if n > 8 else "center", fontsize=8)
    present = [a for a in summary["ap"] if not math.isnan(a)]
    mean = sum(present) / len(present) if present else 0.0
    ax.set(
        ylim=(0.0, 1.2), yticks=np.linspace(0, 1, 6), ylabel="score", title=f"Per-class AP (mAP {mean:.3f})"
    )
    ax.legend(loc="upper center", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return fig


def examples_figure(
    examples: list[tuple[Any, list[int], list[float]]], names: list[str], summary: dict[str, Any] | None
) -> Figure:
    """Validation images with ``true`` and ``pred`` label sets; exact matches are marked correct."""
    thresholds = summary["threshold"] if summary else [0.5] * len(names)
    texts, correct = [], []
    for _, true, probs in examples:
        t = {n for n, v in zip(names, true, strict=True) if v}
        p = {n for n, v, th in zip(names, probs, thresholds, strict=True) if v >= th}
        texts.append(f"true: {' '.join(sorted(t)) or '-'}\npred: {' '.join(sorted(p)) or '-'}")
        correct.append(t == p)
    return prediction_grid([e[0] for e in examples], texts, correct)  # type: ignore[arg-type]
