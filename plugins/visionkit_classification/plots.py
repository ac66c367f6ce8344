"""Evaluation plots of every ``visionkit train`` run, written to ``<run_dir>/plots/``.

:class:`EvaluationPlots` records per-epoch curves and the final validation's predictions and
writes ``training_curves.png`` + ``history.csv`` (after every epoch), and, at the end of fit,
``confusion_matrix.png``/``.csv``, ``per_class_metrics.png``/``.csv`` and ``misclassified.png``.
The figures also go to the TensorBoard and wandb loggers as ``plots/<name>``.

Predictions come from ``pl_module.last_eval_output = (logits, labels)`` when the task sets it
in its validation step (ImageClassifier does), else from one extra forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from visionkit_core import (
    ConfigError,
    log_figure,
    new_figure,
    prediction_grid,
    save_png,
    to_display,
    write_csv,
)
from visionkit_core import never_fail as _never_fail

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: history.csv columns after ``epoch``, each with the ``callback_metrics`` keys it is read from.
METRIC_SOURCES: dict[str, tuple[str, ...]] = {
    "train/loss": ("train/loss_epoch", "train/loss"),
    "train/acc": ("train/acc_epoch", "train/acc"),
    "val/loss": ("val/loss",),
    "val/acc": ("val/acc",),
}
#: Counts are written into the confusion-matrix cells up to this many classes.
ANNOTATE_MAX_CLASSES = 20
#: Class names label the axes up to this many classes (beyond, they would overlap).
TICK_LABELS_MAX_CLASSES = 60

Row = dict[str, float | None]


class Mistake(NamedTuple):
    """One misclassified validation image, ready to display."""

    confidence: float  # softmax probability of the wrong prediction
    image: np.ndarray  # (H, W, C) or (H, W), float in [0, 1]
    label: int
    pred: int


class EvaluationPlots(Callback):
    """Write training curves, a confusion matrix, per-class metrics and misclassified images.

    Args:
        run_dir: the run directory; files go to ``<run_dir>/plots/``.
        max_misclassified: most images in ``misclassified.png`` (the most confident mistakes).
    """

    def __init__(self, run_dir: Path, max_misclassified: int = 25) -> None:
        super().__init__()
        if int(max_misclassified) < 0:
            raise ConfigError(f"EvaluationPlots: max_misclassified={max_misclassified} must be >= 0")
        self.run_dir = Path(run_dir)
        self.max_misclassified = int(max_misclassified)
        self.history: list[Row] = []
        #: (true, predicted) counts of the last completed validation, summed over ranks.
        self.confusion_matrix: torch.Tensor | None = None
        #: the most confident mistakes of that validation (rank zero's share of the data).
        self.misclassified: list[Mistake] = []
        self._cm: torch.Tensor | None = None
        self._mistakes: list[Mistake] = []
        self._collecting = False
        self._validated = False

    @property
    def plots_dir(self) -> Path:
        return self.run_dir / "plots"

    # -- state: the history survives --resume through the checkpoint -----------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resuming from an older checkpoint: epochs from here on will be recorded again.
        self.history = [row for row in self.history if (row["epoch"] or 0) < trainer.current_epoch]

    # -- collecting the validation predictions ---------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collecting = not trainer.sanity_checking
        self._cm, self._mistakes = None, []

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
        if stored is not None:
            pl_module.last_eval_output = None  # never reuse a stale batch, nor keep it alive
        if not self._collecting or dataloader_idx != 0:
            return
        split = _split_batch(batch)
        images = split[0] if split is not None else None
        if stored is not None:
            logits, labels = stored
        elif split is not None:
            with torch.no_grad():  # every rank runs this: under FSDP a forward pass is collective
                logits, labels = pl_module(split[0]), split[1]
        else:
            return
        if isinstance(logits, torch.Tensor) and logits.ndim == 2 and len(logits) == len(labels):
            self._add(pl_module, images, logits.detach().float(), labels.detach().long())

    def _add(
        self, pl_module: Any, images: torch.Tensor | None, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        n = _num_classes(pl_module) or logits.shape[1]
        probs, preds = torch.softmax(logits, dim=1).max(dim=1)
        valid = (labels >= 0) & (labels < n) & (preds < n)  # ignore_index labels such as -100
        pairs = (labels[valid] * n + preds[valid]).cpu()
        cm = torch.bincount(pairs, minlength=n * n).view(n, n)
        self._cm = cm if self._cm is None else self._cm + cm
        if images is None or self.max_misclassified == 0 or len(images) != len(labels):
            return
        wrong = torch.nonzero(valid & (preds != labels)).flatten()
        wrong = wrong[torch.argsort(probs[wrong], descending=True)][: self.max_misclassified]
        if len(wrong) == 0:
            return
        shown = to_display(pl_module, images[wrong])
        conf, true, pred = probs[wrong].tolist(), labels[wrong].tolist(), preds[wrong].tolist()
        new = [Mistake(c, img, t, p) for c, img, t, p in zip(conf, shown, true, pred, strict=True)]
        kept = sorted([*self._mistakes, *new], key=lambda m: -m.confidence)
        self._mistakes = kept[: self.max_misclassified]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._collecting:
            return
        self._collecting, self._validated = False, True
        cm = self._cm
        n = _num_classes(pl_module) or (cm.shape[0] if cm is not None else 0)
        if trainer.world_size > 1 and n:  # a (C, C) matrix has one shape on every rank: safe to gather
            local = cm if cm is not None else torch.zeros(n, n, dtype=torch.long)
            cm = pl_module.all_gather(local.to(pl_module.device)).reshape(-1, n, n).sum(dim=0).cpu()
        if cm is not None:
            self.confusion_matrix, self.misclassified = cm, self._mistakes
        self._cm, self._mistakes = None, []

    # -- per-epoch history -------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: Row = {"epoch": float(trainer.current_epoch)}
        for column, keys in METRIC_SOURCES.items():
            value = next((metrics[k] for k in keys if k in metrics), None)
            # an epoch without validation must not repeat the previous validation's values
            stale = column.startswith("val/") and not self._validated
            row[column] = None if value is None or stale else float(value)
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None
        self._validated = False
        self.history.append(row)
        if trainer.is_global_zero:
            _never_fail("training curves", self._write_history)

    # -- writing -----------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            _never_fail("plots", self.write, trainer, class_names_of(pl_module, self.confusion_matrix))

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Ctrl-C ends fit without on_fit_end; keep what the finished validations showed.
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            _never_fail("plots", self.write, None, class_names_of(pl_module, self.confusion_matrix))

    def _write_history(self) -> Figure | None:
        if not self.history:
            return None
        columns = ["epoch", *METRIC_SOURCES, "lr"]
        rows = [[_cell(row.get(c), integer=c == "epoch") for c in columns] for row in self.history]
        write_csv(self.plots_dir / "history.csv", columns, rows)
        fig = curves_figure(self.history)
        save_png(fig, self.plots_dir / "training_curves.png")
        return fig

    def write(self, trainer: L.Trainer | None, class_names: list[str]) -> dict[str, Path]:
        """Write every plot and CSV; send the figures to ``trainer``'s loggers when given."""
        figures: dict[str, Figure] = {}
        curves = self._write_history()
        if curves is not None:
            figures["training_curves"] = curves
        if self.confusion_matrix is not None:
            cm = self.confusion_matrix.numpy()
            scores = per_class_scores(cm)
            self._write_tables(cm, scores, class_names)
            shown = [name.replace("$", r"\$") for name in class_names]  # a "$" would start mathtext
            figures["confusion_matrix"] = confusion_figure(cm, shown)
            figures["per_class_metrics"] = per_class_figure(scores, shown)
            figures["misclassified"] = misclassified_figure(self.misclassified, shown)
        paths = {name: self.plots_dir / f"{name}.png" for name in figures}
        for name, fig in figures.items():
            if name != "training_curves":
                save_png(fig, paths[name])
            if trainer is not None:
                log_figure(trainer, name, fig, paths[name])
        return paths

    def _write_tables(self, cm: np.ndarray, scores: dict[str, np.ndarray], class_names: list[str]) -> None:
        counts = [[name, *map(int, row)] for name, row in zip(class_names, cm, strict=True)]
        write_csv(self.plots_dir / "confusion_matrix.csv", ["true \\ predicted", *class_names], counts)
        columns = ("precision", "recall", "f1", "support")
        rows = [
            [name, *(_cell(float(scores[c][i])) for c in columns[:3]), int(scores["support"][i])]
            for i, name in enumerate(class_names)
        ]
        write_csv(self.plots_dir / "per_class_metrics.csv", ["class", *columns], rows)


def _num_classes(pl_module: Any) -> int | None:
    value = getattr(pl_module, "hparams", {}).get("num_classes")
    return int(value) if isinstance(value, int) and value > 0 else None


def class_names_of(pl_module: Any, cm: torch.Tensor | None) -> list[str]:
    """The module's class names (``class_names`` or ``hparams.class_names``), one per matrix row."""
    names = getattr(pl_module, "class_names", None)
    if not isinstance(names, (list, tuple)):
        names = getattr(pl_module, "hparams", {}).get("class_names") or []
    n = len(cm) if cm is not None else len(names)
    return [str(names[i]) if i < len(names) else str(i) for i in range(n)]


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class of a (true, predicted) matrix; 0/0 counts as 0."""
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    precision = _ratio(tp, cm.sum(axis=0))
    recall = _ratio(tp, support)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "support": support,
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def _cell(value: float | None, *, integer: bool = False) -> str:
    if value is None or math.isnan(value):
        return ""
    return str(int(value)) if integer else f"{value:.6g}"


def curves_figure(history: Sequence[Row]) -> Figure:
    """Loss, accuracy and learning rate per epoch, one panel each; a metric never logged is skipped."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(13, 3.8)
    panels = (
        ("loss", ("train/loss", "val/loss")),
        ("accuracy", ("train/acc", "val/acc")),
        ("learning rate", ("lr",)),
    )
    for ax, (title, columns) in zip(fig.subplots(1, 3), panels, strict=True):
        for column in columns:
            points = [(row["epoch"], row[column]) for row in history if row.get(column) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=column)
        if ax.lines and len(columns) > 1:
            ax.legend()
        elif not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return fig


def confusion_figure(cm: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Row-normalised colours (share of each true class), counts written in small matrices."""
    n = len(cm)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(max(4.0, 0.45 * n + 2.0), 16.0)
    fig = new_figure(side + 1.5, side)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    if n <= TICK_LABELS_MAX_CLASSES:
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), class_names)
    if n <= ANNOTATE_MAX_CLASSES:
        for (i, j), count in np.ndenumerate(cm):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=8, color=color)
    total = int(cm.sum())
    acc = np.trace(cm) / total if total else 0.0
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix: {total} images, accuracy {acc:.3f}")
    return fig


def per_class_figure(scores: dict[str, np.ndarray], class_names: Sequence[str]) -> Figure:
    """Precision, recall and F1 bars per class; the support is shown under each class name."""
    n = len(class_names)
    fig = new_figure(min(max(6.0, 0.8 * n + 2.0), 24.0), 4.5)
    ax = fig.subplots()
    x = np.arange(n)
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1"), strict=True):
        ax.bar(x + offset, scores[key], width=0.27, label=key)
    if n <= TICK_LABELS_MAX_CLASSES:
        tilt = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if n > 8 else {}
        sep = " " if tilt else "\n"
        labels = [f"{name}{sep}(n={int(s)})" for name, s in zip(class_names, scores["support"], strict=True)]
        ax.set_xticks(x, labels, **tilt)
    # the band above 1.0 holds the legend, so it never hides a bar
    ax.set(ylim=(0.0, 1.2), yticks=np.linspace(0, 1, 6), ylabel="score", title="Per-class metrics")
    ax.legend(loc="upper center", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    return fig


def misclassified_figure(mistakes: Sequence[Mistake], class_names: Sequence[str]) -> Figure:
    """A captioned grid of mistakes; with none, a figure that says so (never a stale old grid)."""
    if not mistakes:
        fig = new_figure(5, 1.5)
        fig.text(0.5, 0.5, "No misclassified images in the final validation", ha="center", va="center")
        return fig
    texts = [
        f"true: {class_names[m.label]} / pred: {class_names[m.pred]} ({m.confidence:.2f})" for m in mistakes
    ]
    images = [m.image for m in mistakes]  # a list: image sizes may differ between batches
    return prediction_grid(images, texts, [False] * len(mistakes))  # type: ignore[arg-type]


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images, labels)`` of a ``(images, labels, ...)`` batch, or ``None``."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        images, labels = batch[0], batch[1]
        if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.ndim == 4:
            return images, labels
    return None
