"""Evaluation plots of the ``multilabel`` task, written to ``<run_dir>/plots/``.

- ``training_curves.png`` + ``history.csv``: loss and ``val/map`` per epoch;
- ``per_class_ap.png`` + ``per_class_ap.csv``: average precision per class (bars), with the
  tuned threshold, precision and recall at it, and the number of positives;
- ``examples.png``: validation images captioned with their true and predicted label sets.

The per-class numbers are the task's ``eval_summary`` of the last validation; the examples
come from ``pl_module.last_eval_output = (images, {"multi_hot": targets}, {"probs": ..., ...})``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np

from visionkit_core import new_figure, prediction_grid, to_display, write_csv
from visionkit_core.kit.evaluation import EvaluationCallback
from visionkit_core.kit.plots import cell

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: How many validation images the example grid shows.
EXAMPLES = 16
HISTORY = ("train/loss", "val/loss", "val/map", "val/f1_macro")


class MultilabelPlots(EvaluationCallback):
    """Curves every epoch; per-class AP and an example grid at the end of fit (rank 0 writes)."""

    columns = {key: (key,) for key in HISTORY}
    panels = (("loss", ("train/loss", "val/loss")), ("score", ("val/map", "val/f1_macro")))

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(run_dir)
        self._examples: list[tuple[Any, list[int], list[float]]] = []

    def reset(self) -> None:
        self._examples = []

    def collect(self, trainer: L.Trainer, pl_module: Any, batch: Any, stored: Any) -> None:
        if stored is None or len(self._examples) >= EXAMPLES:
            return
        if len(stored) == 3:
            images, truth, pred = stored
            hot, probs = truth["multi_hot"].round().long(), pred["probs"]
        else:  # a task written for hookspec 1.1: (probabilities, multi-hot targets), images from the batch
            images, (probs, hot) = batch[0], stored
            hot = hot.round().long()
        shown = to_display(pl_module, images[: EXAMPLES - len(self._examples)])
        for img, p, t in zip(shown, probs.cpu().tolist(), hot.cpu().tolist(), strict=False):
            self._examples.append((img, t, p))

    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Figure]:
        names = [str(n) for n in getattr(pl_module, "class_names", [])]
        summary = getattr(pl_module, "eval_summary", None)
        figures = {}
        if summary and names:
            self._write_table(names, summary)
            figures["per_class_ap"] = per_class_ap_figure(names, summary)
        if self._examples and names:
            figures["examples"] = examples_figure(self._examples, names, summary)
        return figures

    def _write_table(self, names: list[str], summary: dict[str, list[float]]) -> None:
        columns = ["class", "ap", "threshold", "precision", "recall", "positives"]
        rows = [
            [
                n,
                cell(summary["ap"][i]),
                cell(summary["threshold"][i]),
                cell(summary["precision"][i]),
                cell(summary["recall"][i]),
                str(summary["support"][i]),
            ]
            for i, n in enumerate(names)
        ]
        write_csv(self.plots_dir / "per_class_ap.csv", columns, rows)


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
