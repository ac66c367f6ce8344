"""MultiLabelClassifier: the ``multilabel`` task (several classes per image) on the classifier's path.

Truth is a batched Sample ``{"multi_hot": (N, C) float}`` (a CSV manifest with a ``labels``
column; a bare ``(N, C)`` tensor, the deprecated ``(images, targets)`` form, still works), and
``predict_step`` gives one Sample ``{"multi_hot", "probs"}`` per input. The loss is
BCE-with-logits (``pos_weight`` from the class counts with ``--class-weights balanced``;
label smoothing pulls targets towards 0.5). Validation logs ``val/map`` (macro average
precision over the classes that have positives), ``val/f1_micro`` / ``val/f1_macro`` at
``threshold``, and ``val/recall/<class>`` at the tuned thresholds.

After every validation while fitting (not the sanity check) each class's decision threshold
is tuned to maximise its F1 on that validation's exact scores (gathered from every process;
the threshold sits halfway between the lowest score kept and the next one below) and stored
in the hyperparameter ``thresholds``, so every checkpoint carries the
thresholds that go with its own weights (EMA weights included: the tuning sees what
validation saw). ``predict`` turns probabilities into label sets with them; ``--threshold``
overrides them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics.aggregation import CatMetric
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from visionkit_classification.model import PER_CLASS_LOG_MAX, ImageClassifier
from visionkit_classification.recipe import balanced_weights
from visionkit_core import ExportSpec, Prediction, UsageError
from visionkit_core.plugin.contract import Sample

#: The arguments of ImageClassifier.__init__, which this task's __init__ takes too and passes on.
_CLASSIFIER_ARGS = tuple(inspect.signature(ImageClassifier.__init__).parameters)[1:]
#: The per-epoch metrics of each evaluation phase (``<phase>_<name>`` attributes).
_METRICS = ("ap", "f1_micro", "f1_macro", "probs", "targets")


class MultiLabelClassifier(ImageClassifier):
    """Multi-label image classifier: backbone + BCE-with-logits, AdamW, warmup + cosine per step.

    Takes the classifier's arguments, and:

    Args:
        threshold: the decision threshold before any tuning, and of ``val/f1_*``.
        thresholds: per-class thresholds (tuned on validation during fit and stored here).
        train_images: training images (given by the dataset; the ``pos_weight`` denominator).
        multilabel: set by the data; a dataset that does not set it is refused (TaskSpec needs).
    """

    # the classifier's spec (backbone, outputs, export formats), judged and fed differently
    visionkit_task = dataclasses.replace(
        ImageClassifier.visionkit_task,
        name="multilabel",
        monitor="val/map",
        needs=("class_names", "multilabel"),
        default_data="digit-sets",
        metrics=("val/map", "val/f1_micro", "val/f1_macro", "val/loss"),
    )
    _multilabel_task = True
    truth_key = "multi_hot"

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
        given = locals()  # every classifier argument, forwarded by name (ours stay here)
        super().__init__(**{name: given[name] for name in _CLASSIFIER_ARGS})
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
            for avg in ("micro", "macro"):
                f1 = MultilabelF1Score(num_labels=num_classes, threshold=t, average=avg)
                setattr(self, f"{phase}_f1_{avg}", f1)
            # the exact scores and targets, gathered from every process, for tuning and per-class numbers
            setattr(self, f"{phase}_probs", CatMetric())
            setattr(self, f"{phase}_targets", CatMetric())

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
    def training_step(self, batch: tuple[Tensor, Sample], batch_idx: int) -> Tensor:
        images, targets = batch[0], self.truth_of(batch).float()
        if self.mix is not None:
            images, targets = self.mix(images, targets)
        loss = self.loss_fn(self(images), targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def _eval_step(self, phase: str, batch: tuple[Tensor, Sample]) -> None:
        images, targets = batch[0], self.truth_of(batch)
        logits = self(images)
        loss = self.loss_fn(logits, targets)
        pred = self.predicted(logits.detach())
        probs, hot = pred["probs"], targets.round().long()
        # (images, truth, prediction) for MultilabelPlots: no second forward
        self.last_eval_output = (images, {"multi_hot": targets}, pred)
        for name in ("ap", "f1_micro", "f1_macro"):
            getattr(self, f"{phase}_{name}").update(probs, hot)
        getattr(self, f"{phase}_probs").update(probs.detach())
        getattr(self, f"{phase}_targets").update(hot.float())
        self.log(f"{phase}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        # thresholds are tuned while fitting only: `visionkit validate` reports the stored ones
        fitting = self.trainer.state.fn == "fit"
        self._epoch_metrics("val", tune=fitting and not self.trainer.sanity_checking)

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test", tune=False)

    def _epoch_metrics(self, phase: str, *, tune: bool) -> None:
        ap_metric = getattr(self, f"{phase}_ap")
        if not ap_metric.update_called:
            return
        ap = ap_metric.compute().float().cpu()
        probs = getattr(self, f"{phase}_probs").compute().float().cpu().reshape(-1, len(ap))
        targets = getattr(self, f"{phase}_targets").compute().cpu().reshape(-1, len(ap)) > 0.5
        support = targets.sum(dim=0)
        present = support > 0
        mean_ap = float(ap[present].mean()) if bool(present.any()) else 0.0
        self.log(f"{phase}/map", mean_ap, prog_bar=True, sync_dist=True)
        for avg in ("micro", "macro"):
            f1 = getattr(self, f"{phase}_f1_{avg}").compute()
            self.log(f"{phase}/f1_{avg}", float(f1), sync_dist=True)
        thresholds = self.thresholds
        if tune:
            thresholds = tuned_thresholds(probs, targets, thresholds)
            self.hparams["thresholds"] = [round(float(t), 4) for t in thresholds]
        prec, rec = precision_recall_at(probs, targets, thresholds)
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
        for name in _METRICS:
            getattr(self, f"{phase}_{name}").reset()

    def predicted(self, logits: Tensor) -> Sample:
        """The batched prediction of ``logits``: ``{"multi_hot": (N, C) 0/1 float at the stored
        thresholds, "probs": (N, C) sigmoid}`` (``predict_step`` gives it per input)."""
        probs = torch.sigmoid(logits.float())
        return {"multi_hot": (probs >= self.thresholds.to(probs.device)).float(), "probs": probs}

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


def _f1(precision: Tensor, recall: Tensor) -> Tensor:
    return (2 * precision * recall / (precision + recall)).nan_to_num(0.0)


def precision_recall_at(probs: Tensor, targets: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class precision and recall of ``probs >= thresholds`` against boolean ``targets`` (0/0 -> 0)."""
    chosen = probs >= thresholds.to(probs.dtype)[None, :]
    tp = (chosen & targets).sum(dim=0).float()
    precision = (tp / chosen.sum(dim=0).float()).nan_to_num(0.0)
    recall = (tp / targets.sum(dim=0).float()).nan_to_num(0.0)
    return precision, recall


def tuned_thresholds(probs: Tensor, targets: Tensor, current: Tensor) -> Tensor:
    """Per class, the threshold of best F1 on ``probs`` (``(N, C)``) against boolean ``targets``.

    Each candidate keeps the images scoring at least some score ``s``; its threshold lies halfway
    between ``s`` and the next lower score, so new images a little under ``s`` count as well.
    Ties go to the candidate nearest 0.5; classes without positives keep ``current``.
    """
    out = current.clone().float()
    for c in range(probs.shape[1]):
        positives = int(targets[:, c].sum())
        if positives == 0:
            continue
        scores, order = probs[:, c].sort(descending=True)
        hits = targets[order, c].float()
        tp = hits.cumsum(0)
        kept = torch.arange(1, len(scores) + 1, dtype=torch.float32)
        f1 = 2 * tp / (kept + positives)  # F1 = 2TP / (2TP + FP + FN) = 2TP / (kept + positives)
        lower = torch.cat([scores[1:], scores.new_zeros(1)])
        cut = scores > lower  # a cut between two distinct scores
        if not bool(cut.any()):
            continue
        candidates = torch.where(cut, (scores + lower) / 2, torch.full_like(scores, float("nan")))
        best = f1[cut].max()
        close = cut & (f1 >= best - 1e-9)
        distance = torch.where(close, (candidates - 0.5).abs(), torch.full_like(scores, 2.0))
        out[c] = candidates[int(distance.argmin())]
    return out
