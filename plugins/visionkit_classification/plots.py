"""Evaluation plots of every ``visionkit train`` run, written to ``<run_dir>/plots/``.

:class:`EvaluationPlots` records per-epoch curves and the final validation's predictions and
writes ``training_curves.png`` + ``history.csv`` (after every epoch), and, at the end of fit,
``confusion_matrix.png``/``.csv``, ``per_class_metrics.png``/``.csv`` and ``misclassified.png``.
The figures also go to the TensorBoard and wandb loggers as ``plots/<name>``.

Predictions come from ``pl_module.last_eval_output = (images, truth, pred)`` when the task sets it
in its validation step (ImageClassifier does: the model input, ``{"label": (N,)}`` and
``{"label": (N,), "probs": (N, C)}``), else from one extra forward pass over an ``(images,
truth)`` batch (``truth`` a Sample with ``label``, or the deprecated bare label tensor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import lightning as L
import numpy as np
import torch

from visionkit_core import ConfigError, new_figure, prediction_grid, to_display, write_csv
from visionkit_core.kit.evaluation import EvaluationCallback
from visionkit_core.kit.plots import cell

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


class Mistake(NamedTuple):
    """One misclassified validation image, ready to display."""

    confidence: float  # predicted probability of the wrong prediction
    image: np.ndarray  # (H, W, C) or (H, W), float in [0, 1]
    label: int
    pred: int


class EvaluationPlots(EvaluationCallback):
    """Write training curves, a confusion matrix, per-class metrics and misclassified images.

    Args:
        run_dir: the run directory; files go to ``<run_dir>/plots/``.
        max_misclassified: most images in ``misclassified.png`` (the most confident mistakes).
    """

    columns = METRIC_SOURCES
    panels = (
        ("loss", ("train/loss", "val/loss")),
        ("accuracy", ("train/acc", "val/acc")),
        ("learning rate", ("lr",)),
    )
    record_lr = True

    def __init__(self, run_dir: Path, max_misclassified: int = 25) -> None:
        super().__init__(run_dir)
        if int(max_misclassified) < 0:
            raise ConfigError(f"EvaluationPlots: max_misclassified={max_misclassified} must be >= 0")
        self.max_misclassified = int(max_misclassified)
        #: (true, predicted) counts of the last completed validation, summed over ranks.
        self.confusion_matrix: torch.Tensor | None = None
        #: the most confident mistakes of that validation (rank zero's share of the data).
        self.misclassified: list[Mistake] = []
        self._cm: torch.Tensor | None = None
        self._mistakes: list[Mistake] = []

    # -- collecting the validation predictions ---------------------------------------------
    def reset(self) -> None:
        self._cm, self._mistakes = None, []

    def collect(self, trainer: L.Trainer, pl_module: Any, batch: Any, stored: Any) -> None:
        if stored is not None and len(stored) == 3:
            images, truth, pred = stored
            labels, probs = truth["label"], pred["probs"]
        elif stored is not None:  # a task written for hookspec 1.1: (logits, labels)
            split = _split_batch(batch)
            images, probs, labels = (
                split[0] if split else None,
                torch.softmax(stored[0].float(), 1),
                stored[1],
            )
        elif (split := _split_batch(batch)) is not None:
            images, labels = split
            with torch.no_grad():  # every rank runs this: under FSDP a forward pass is collective
                probs = torch.softmax(pl_module(images).float(), dim=1)
        else:
            return
        if isinstance(probs, torch.Tensor) and probs.ndim == 2 and len(probs) == len(labels):
            self._add(pl_module, images, probs.detach().float(), labels.detach().long())

    def _add(
        self, pl_module: Any, images: torch.Tensor | None, probs: torch.Tensor, labels: torch.Tensor
    ) -> None:
        n = _num_classes(pl_module) or probs.shape[1]
        probs, preds = probs.max(dim=1)
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

    def collected(self, trainer: L.Trainer, pl_module: Any) -> None:
        cm = self._cm
        n = _num_classes(pl_module) or (cm.shape[0] if cm is not None else 0)
        if trainer.world_size > 1 and n:  # a (C, C) matrix has one shape on every rank: safe to gather
            local = cm if cm is not None else torch.zeros(n, n, dtype=torch.long)
            cm = pl_module.all_gather(local.to(pl_module.device)).reshape(-1, n, n).sum(dim=0).cpu()
        if cm is not None:
            self.confusion_matrix, self.misclassified = cm, self._mistakes
        self._cm, self._mistakes = None, []

    # -- writing -----------------------------------------------------------------------------
    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Figure]:
        """The confusion matrix, per-class metrics and mistakes (``pl_module``: the task or its names)."""
        if self.confusion_matrix is None:
            return {}
        names = pl_module if isinstance(pl_module, list) else class_names_of(pl_module, self.confusion_matrix)
        cm = self.confusion_matrix.numpy()
        scores = per_class_scores(cm)
        self._write_tables(cm, scores, names)
        shown = [name.replace("$", r"\$") for name in names]  # a "$" would start mathtext
        return {
            "confusion_matrix": confusion_figure(cm, shown),
            "per_class_metrics": per_class_figure(scores, shown),
            "misclassified": misclassified_figure(self.misclassified, shown),
        }

    def _write_tables(self, cm: np.ndarray, scores: dict[str, np.ndarray], class_names: list[str]) -> None:
        counts = [[name, *map(int, row)] for name, row in zip(class_names, cm, strict=True)]
        write_csv(self.plots_dir / "confusion_matrix.csv", ["true \\ predicted", *class_names], counts)
        columns = ("precision", "recall", "f1", "support")
        rows = [
            [name, *(cell(float(scores[c][i])) for c in columns[:3]), int(scores["support"][i])]
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
    """``(images, labels)`` of an ``(images, {"label": labels}, ...)`` or ``(images, labels, ...)``
    batch, or ``None``."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        images, labels = batch[0], batch[1]
        if isinstance(labels, Mapping):
            labels = labels.get("label")
        if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.ndim == 4:
            return images, labels
    return None
