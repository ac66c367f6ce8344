"""MultiLabelClassifier: the ``multilabel`` task (several classes per image) on the classifier's path.

Targets are multi-hot ``(N, C)`` floats (a CSV manifest with a ``labels`` column). The loss is
BCE-with-logits (``pos_weight`` from the class counts with ``--class-weights balanced``;
label smoothing pulls targets towards 0.5). Validation logs ``val/map`` (macro average
precision over the classes that have positives), ``val/f1_micro`` / ``val/f1_macro`` at
``threshold``, and ``val/recall/<class>`` at the tuned thresholds.

After every validation (not the sanity check) each class's decision threshold is tuned to
maximise its F1 on that validation (a 101-step precision-recall curve, synchronised across
processes) and stored in the hyperparameter ``thresholds``, so every checkpoint carries the
thresholds that go with its own weights (EMA weights included: the tuning sees what
validation saw). ``predict`` turns probabilities into label sets with them; ``--threshold``
overrides them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics.classification import (
    MultilabelAveragePrecision,
    MultilabelF1Score,
    MultilabelPrecisionRecallCurve,
    MultilabelStatScores,
)

from visionkit_classification.model import PER_CLASS_LOG_MAX, ImageClassifier
from visionkit_classification.recipe import balanced_weights
from visionkit_core import ExportSpec, MediaSample, Prediction, TaskSpec, UsageError

#: Threshold steps of the precision-recall curve the per-class thresholds are tuned on.
TUNING_STEPS = 101


class MultiLabelClassifier(ImageClassifier):
    """Multi-label image classifier: backbone + BCE-with-logits, AdamW, warmup + cosine per step.

    Takes the classifier's arguments, and:

    Args:
        threshold: the decision threshold before any tuning, and of ``val/f1_*``.
        thresholds: per-class thresholds (tuned on validation during fit and stored here).
        train_images: training images (given by the dataset; the ``pos_weight`` denominator).
        multilabel: set by the data; a dataset that does not set it is refused (TaskSpec needs).
    """

    visionkit_task = TaskSpec(
        name="multilabel",
        monitor="val/map",
        mode="max",
        needs=("class_names", "multilabel"),
        default_data="digit-sets",
        default_backbone="resnet18",
        predict_outputs=(".csv", ".json"),
        export_formats=("onnx", "torchscript"),
        metrics=("val/map", "val/f1_micro", "val/f1_macro", "val/loss"),
    )
    _multilabel_task = True

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 10,
        class_names: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.0,
        pretrained: bool = False,
        weights: str | None = None,
        backbone_options: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        class_weights: str = "none",
        class_counts: list[int] | None = None,
        multilabel: bool = True,
        threshold: float = 0.5,
        thresholds: list[float] | None = None,
        train_images: int | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise UsageError(f"threshold must be between 0 and 1, got {threshold}")
        if thresholds is not None and len(thresholds) != num_classes:
            raise UsageError(f"got {len(thresholds)} thresholds for {num_classes} classes")
        if class_weights == "balanced" and not train_images:
            raise UsageError("--class-weights balanced needs the number of training images from the data")
        super().__init__(
            backbone=backbone,
            num_classes=num_classes,
            class_names=class_names,
            lr=lr,
            weight_decay=weight_decay,
            label_smoothing=label_smoothing,
            pretrained=pretrained,
            weights=weights,
            backbone_options=backbone_options,
            preprocessing=preprocessing,
            mixup=mixup,
            cutmix=cutmix,
            class_weights=class_weights,
            class_counts=class_counts,
            multilabel=multilabel,
        )
        initial = thresholds if thresholds is not None else [threshold] * num_classes
        self.hparams["thresholds"] = [float(t) for t in initial]
        #: per-class AP, thresholds and recall of the latest validation (read by the plots)
        self.eval_summary: dict[str, list[float]] | None = None

    def _class_weight(self) -> Tensor:
        counts = self.hparams.class_counts or []
        return balanced_weights(counts, multilabel=True, total=int(self.hparams.train_images or 0))

    def _init_metrics(self, num_classes: int) -> None:
        t = float(self.hparams.threshold)
        for phase in ("val", "test"):
            setattr(self, f"{phase}_ap", MultilabelAveragePrecision(num_labels=num_classes, average="none"))
            setattr(self, f"{phase}_stats", MultilabelStatScores(num_labels=num_classes, average="none"))
            for avg in ("micro", "macro"):
                f1 = MultilabelF1Score(num_labels=num_classes, threshold=t, average=avg)
                setattr(self, f"{phase}_f1_{avg}", f1)
            setattr(
                self, f"{phase}_prc", MultilabelPrecisionRecallCurve(num_classes, thresholds=TUNING_STEPS)
            )

    @property
    def thresholds(self) -> Tensor:
        """The per-class decision thresholds ``(C,)`` predict uses."""
        return torch.tensor(self.hparams.thresholds, dtype=torch.float32)

    def loss_fn(self, logits: Tensor, targets: Tensor) -> Tensor:
        """BCE-with-logits against (smoothed) multi-hot or mixed targets, ``pos_weight`` if balanced."""
        targets = targets.to(logits.dtype)
        smoothing = float(self.hparams.label_smoothing)
        if smoothing:
            targets = targets * (1.0 - smoothing) + 0.5 * smoothing
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.class_weight)

    # -- steps ---------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch[0], batch[1].float()
        if self.mix is not None:
            images, targets = self.mix(images, targets)
        loss = self.loss_fn(self(images), targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def _eval_step(self, phase: str, batch: tuple[Tensor, Tensor]) -> None:
        images, targets = batch[0], batch[1]
        logits = self(images)
        loss = self.loss_fn(logits, targets)
        probs = torch.sigmoid(logits.float())
        hot = targets.round().long()
        self.last_eval_output = (probs.detach(), hot)  # read by MultilabelPlots: no second forward
        for name in ("ap", "stats", "f1_micro", "f1_macro", "prc"):
            getattr(self, f"{phase}_{name}").update(probs, hot)
        self.log(f"{phase}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val", tune=not self.trainer.sanity_checking)

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test", tune=False)

    def _epoch_metrics(self, phase: str, *, tune: bool) -> None:
        ap_metric = getattr(self, f"{phase}_ap")
        if not ap_metric.update_called:
            return
        ap = ap_metric.compute().float().cpu()
        support = getattr(self, f"{phase}_stats").compute()[:, 4].cpu()
        present = support > 0
        mean_ap = float(ap[present].mean()) if bool(present.any()) else 0.0
        self.log(f"{phase}/map", mean_ap, prog_bar=True, sync_dist=True)
        for avg in ("micro", "macro"):
            f1 = getattr(self, f"{phase}_f1_{avg}").compute()
            self.log(f"{phase}/f1_{avg}", float(f1), sync_dist=True)
        precision, recall, grid = getattr(self, f"{phase}_prc").compute()
        thresholds = self.thresholds
        if tune:
            thresholds = tuned_thresholds(precision.cpu(), recall.cpu(), grid.cpu(), present, thresholds)
            self.hparams["thresholds"] = [round(float(t), 4) for t in thresholds]
        at = _grid_index(grid.cpu(), thresholds)
        rec = recall.cpu().gather(1, at[:, None]).squeeze(1).nan_to_num(0.0)
        prec = precision.cpu().gather(1, at[:, None]).squeeze(1).nan_to_num(0.0)
        f1_tuned = _f1(prec, rec)
        self.log(f"{phase}/f1_macro_tuned", float(f1_tuned[present].mean()) if present.any() else 0.0)
        if self.hparams.num_classes <= PER_CLASS_LOG_MAX:
            for name, value in zip(self.class_names, rec.tolist(), strict=True):
                self.log(f"{phase}/recall/{name}", float(value), sync_dist=True)
        self.eval_summary = {
            "ap": [
                float(v) if p else float("nan") for v, p in zip(ap.tolist(), present.tolist(), strict=True)
            ],
            "threshold": thresholds.tolist(),
            "recall": rec.tolist(),
            "precision": prec.tolist(),
            "support": [int(s) for s in support.tolist()],
        }
        for name in ("ap", "stats", "f1_micro", "f1_macro", "prc"):
            getattr(self, f"{phase}_{name}").reset()

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Per-class probabilities ``(N, C)`` (sigmoid)."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(images, dict):
            images = images["image"]
        return torch.sigmoid(self(images))

    # -- the visionkit task contract -------------------------------------------------------------
    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        """Training curves, per-class AP bars (with the tuned thresholds) and an example grid."""
        from visionkit_classification.multilabel_plots import MultilabelPlots

        return [MultilabelPlots(run_dir)]

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        """Label sets by the stored per-class thresholds (or ``options["threshold"]``): table, CSV or JSON."""
        from visionkit_classification.predict import write_label_sets

        override = options.get("threshold")
        thresholds = (
            [float(override)] * len(self.class_names) if override is not None else self.hparams.thresholds
        )
        return write_label_sets(predictions, self.class_names, thresholds, output)

    def export_spec(self, image_size: int) -> ExportSpec:
        """Logits, as for the classifier; the sidecar adds the sigmoid and the per-class thresholds."""
        spec = super().export_spec(image_size)
        spec.sidecar["output"] = {
            **spec.sidecar["output"],
            "softmax": False,
            "sigmoid": True,
            "thresholds": dict(zip(self.class_names, self.hparams.thresholds, strict=True)),
        }
        return spec

    def media_samples(self, batch: Any, limit: int) -> list[MediaSample]:
        """Up to ``limit`` images captioned with their true and predicted label sets."""
        images, targets = batch[0][:limit], batch[1][:limit]
        with torch.no_grad():
            probs = torch.sigmoid(self(images)).cpu()
        chosen = probs >= self.thresholds
        shown = (self.denormalize(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        names = self.class_names
        out = []
        for img, pred, true in zip(shown, chosen.tolist(), targets.round().long().tolist(), strict=True):
            p = " ".join(n for n, on in zip(names, pred, strict=True) if on) or "-"
            t = " ".join(n for n, on in zip(names, true, strict=True) if on) or "-"
            out.append(MediaSample(image=img, caption=f"pred: {p} / true: {t}"))
        return out


def _f1(precision: Tensor, recall: Tensor) -> Tensor:
    return (2 * precision * recall / (precision + recall)).nan_to_num(0.0)


def _grid_index(grid: Tensor, thresholds: Tensor) -> Tensor:
    """The curve column of each class's threshold (the largest grid value <= it)."""
    return (torch.searchsorted(grid, thresholds.to(grid.dtype), right=True) - 1).clamp(0, len(grid) - 1)


def tuned_thresholds(
    precision: Tensor, recall: Tensor, grid: Tensor, present: Tensor, current: Tensor
) -> Tensor:
    """Per class, the grid threshold of best F1 (ties: the one nearest 0.5); classes without
    positives keep ``current``. ``precision``/``recall``: ``(C, T + 1)`` from torchmetrics' curve."""
    f1 = _f1(precision[:, : len(grid)].nan_to_num(0.0), recall[:, : len(grid)])
    best = f1.max(dim=1, keepdim=True).values
    # among the best, the threshold closest to 0.5 (a flat optimum should not drift to 0 or 1)
    distance = torch.where(f1 >= best - 1e-9, (grid - 0.5).abs()[None, :], torch.full_like(f1, 2.0))
    chosen = grid[distance.argmin(dim=1)]
    keep = ~present | (best.squeeze(1) <= 0)
    return torch.where(keep, current.to(chosen.dtype), chosen)
