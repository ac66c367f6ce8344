"""ImageClassifier: the classification LightningModule wrapping any registered backbone.

Batches are ``(images, truth)``: uint8 ``(N, 3, H, W)`` images, normalised on the device in
``on_after_batch_transfer`` (``forward`` takes normalised float images), and a batched
:class:`~visionkit_core.plugin.contract.Sample` ``{"label": (N,) int64}`` (a ``(N,)`` label tensor
in its place, the ``(images, labels)`` form of hookspec 1.1, still works but is deprecated).
``predict_step`` gives one Sample ``{"label", "probs"}`` per input. Everything needed to
rebuild the model (backbone name, options, class names, preprocessing) is a hyperparameter,
so ``ImageClassifier.load_from_checkpoint(path)`` works alone and never downloads weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

from visionkit_classification.recipe import (
    backbone_modules,
    balanced_weights,
    check_class_weights,
    format_counts,
    make_mix,
)
from visionkit_core import ExportSpec, MediaSample, Prediction, TaskSpec, UsageError, build_backbone
from visionkit_core.kit.media import media_sample_of
from visionkit_core.kit.task import TaskBase, rank_zero_print
from visionkit_core.plugin.contract import Sample

IMAGENET_PREPROCESSING: dict[str, Any] = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
    "crop_pct": 0.875,
}
#: Per-class recall is logged (``val/recall/<class>``, so it reaches summary.json) up to this many
#: classes; with more, ``plots/per_class_metrics.csv`` has it.
PER_CLASS_LOG_MAX = 100


class ImageClassifier(TaskBase):
    """Multiclass image classifier: backbone + cross-entropy, AdamW, warmup + cosine per step.

    Args:
        backbone: registry name of the network (``resnet18``, ``timm:convnext_tiny``, ...).
        num_classes: number of classes.
        class_names: names of the classes, index order (default ``"0"``, ``"1"``, ...).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay (not applied to biases and norm parameters).
        label_smoothing: label smoothing of the cross-entropy loss.
        pretrained: start from the backbone's pretrained weights (may download).
        weights: a local ``.safetensors``/state-dict file loaded into the backbone.
        backbone_options: keyword options of the backbone factory (``drop_path_rate``...).
        preprocessing: ``mean``/``std``/``interpolation``/``crop_pct``; default: the backbone's.
        mixup: MixUp alpha on each training batch (``--mixup``; 0: off).
        cutmix: CutMix alpha on each training batch (``--cutmix``; 0: off; with mixup, one per batch).
        class_weights: ``none`` or ``balanced`` loss weights from ``class_counts`` (``--class-weights``).
        class_counts: training samples per class (given by the dataset; reported at the start).
        multilabel: set by multi-label data (a ``labels`` manifest); refused: it needs ``--task multilabel``.
    """

    tuple_batches = True  # a dataset's dict batches {"image", **truth} arrive as (images, truth)
    # mode "max", predict outputs .csv/.json and export formats onnx/torchscript: TaskSpec's defaults
    visionkit_task = TaskSpec(
        name="classification",
        monitor="val/acc",
        needs=("class_names",),
        default_data="digits",
        default_backbone="resnet18",
        default_batch_size=64,  # the dense tasks' 16 is TaskSpec's default
        metrics=("val/acc", "val/loss", "val/acc_top5"),
    )

    unnamed_class = "{}"

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
        multilabel: bool = False,
    ) -> None:
        super().__init__()
        self.check_class_names(num_classes, class_names)
        if multilabel and not self._multilabel_task:
            raise UsageError(
                "this data is multi-label (a 'labels' column: several classes per image); "
                "train it with --task multilabel"
            )
        check_class_weights(class_weights, class_counts, num_classes)
        self.save_hyperparameters()
        self.model = build_backbone(
            backbone, num_classes=num_classes, pretrained=pretrained, options=backbone_options or {}
        )
        if weights:
            self.load_weights_into([self.model], weights)

        pre = preprocessing or getattr(self.model, "visionkit_preprocessing", None) or IMAGENET_PREPROCESSING
        self.preprocessing: dict[str, Any] = _plain_preprocessing(pre)
        self.set_normalization(self.preprocessing["mean"], self.preprocessing["std"])

        self.mix = make_mix(num_classes, mixup, cutmix)
        weight = self._class_weight() if class_weights == "balanced" else None
        self.register_buffer("class_weight", weight, persistent=False)
        self._init_metrics(num_classes)

    _multilabel_task = False
    #: the Sample key of this task's truth and predicted classes
    truth_key = "label"

    def truth_of(self, batch: Any) -> Tensor:
        """The truth of a ``(images, truth)`` batch: ``truth[truth_key]`` of a Sample, or the tensor
        itself (the deprecated ``(images, labels)`` form)."""
        truth = batch[1]
        return truth[self.truth_key] if isinstance(truth, Mapping) else truth  # type: ignore[no-any-return]

    def _class_weight(self) -> Tensor:
        return balanced_weights(self.hparams.class_counts or [])

    def _init_metrics(self, num_classes: int) -> None:
        # One metric object per phase: their states must never mix.
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.top5 = num_classes > 5
        if self.top5:
            self.val_acc_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
            self.test_acc_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
        self.val_recall = MulticlassRecall(num_classes=num_classes, average="none")
        self.test_recall = MulticlassRecall(num_classes=num_classes, average="none")

    def loss_fn(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy with label smoothing and class weights; targets: indices or probabilities."""
        return F.cross_entropy(
            logits, targets, weight=self.class_weight, label_smoothing=float(self.hparams.label_smoothing)
        )

    # -- steps ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of normalised float images ``(N, 3, H, W)``."""
        return self.model(x)  # type: ignore[no-any-return]

    def training_step(self, batch: tuple[Tensor, Sample], batch_idx: int) -> Tensor:
        images, labels = batch[0], self.truth_of(batch)
        targets = labels
        if self.mix is not None:
            images, targets = self.mix(images, labels)
        logits = self(images)
        loss = self.loss_fn(logits, targets)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Sample], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Sample], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_step(self, phase: str, batch: tuple[Tensor, Sample]) -> None:
        images, labels = batch[0], self.truth_of(batch)
        logits = self(images)
        loss = self.loss_fn(logits, labels)
        # (images, truth, prediction) for EvaluationPlots: no second forward
        self.last_eval_output = (images, {"label": labels}, self.predicted(logits.detach()))
        acc: MulticlassAccuracy = getattr(self, f"{phase}_acc")
        acc(logits, labels)
        self.log(f"{phase}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log(f"{phase}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if self.top5:
            top5: MulticlassAccuracy = getattr(self, f"{phase}_acc_top5")
            top5(logits, labels)
            self.log(f"{phase}/acc_top5", top5, on_step=False, on_epoch=True)
        getattr(self, f"{phase}_recall").update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        self._log_recall("val")

    def on_test_epoch_end(self) -> None:
        self._log_recall("test")

    def _log_recall(self, phase: str) -> None:
        """``<phase>/recall/<class>`` (synchronised over processes by torchmetrics), then reset."""
        metric: MulticlassRecall = getattr(self, f"{phase}_recall")
        if not metric.update_called:
            return
        recall = metric.compute()
        metric.reset()
        if self.hparams.num_classes <= PER_CLASS_LOG_MAX:
            for name, value in zip(self.class_names, recall.tolist(), strict=True):
                self.log(f"{phase}/recall/{name}", float(value), on_epoch=True, sync_dist=True)

    def on_fit_start(self) -> None:
        counts = self.hparams.class_counts
        if counts and len(counts) == len(self.class_names):
            rank_zero_print(
                f"visionkit: training images per class: {format_counts(self.class_names, counts)}"
            )

    def predicted(self, logits: Tensor) -> Sample:
        """The batched prediction of ``logits``: ``{"label": (N,), "probs": (N, C)}`` (softmax)."""
        probs = torch.softmax(logits.float(), dim=1)
        return {"label": probs.argmax(dim=1), "probs": probs}

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[Sample]:
        """One Sample per input (on the CPU): :meth:`predicted`'s fields of that input."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(images, dict):
            images = images["image"]
        pred = self.predicted(self(images))
        fields = {key: value.detach().cpu() for key, value in pred.items()}
        return [{key: value[i] for key, value in fields.items()} for i in range(len(images))]  # type: ignore[misc]

    @property
    def backbone(self) -> nn.ModuleList:
        """The network without its classifier head: what ``--freeze-backbone`` freezes
        (Lightning's ``BackboneFinetuning`` reads this attribute)."""
        return backbone_modules(self.model, int(self.hparams.num_classes))

    # -- the visionkit task contract -------------------------------------------------------
    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        """Training curves, confusion matrix, per-class metrics and misclassified images."""
        from visionkit_classification.plots import EvaluationPlots

        return [EvaluationPlots(run_dir)]

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        """Top-k classes per image: a table, or ``output`` as CSV/JSON."""
        from visionkit_classification.predict import write_topk

        return write_topk(predictions, self.class_names, int(options.get("topk") or 5), output)

    def export_spec(self, image_size: int) -> ExportSpec:
        """Logits of float ``[0, 1]`` images (normalisation inside); the batch axis is dynamic."""
        from visionkit_classification.predict import export_spec

        return export_spec(self, image_size)

    def media_samples(self, batch: Any, limit: int) -> list[MediaSample]:
        """Up to ``limit`` images of an ``(images, truth)`` batch captioned with truth and prediction."""
        images, truth = batch[0][:limit], self.truth_of(batch)[:limit]
        with torch.no_grad():
            pred = self.predicted(self(images))
        shown, names = self.denormalize(images), self.class_names
        return [
            media_sample_of(image, {self.truth_key: truth[i]}, {k: v[i] for k, v in pred.items()}, names)
            for i, image in enumerate(shown)
        ]


def _plain_preprocessing(pre: dict[str, Any]) -> dict[str, Any]:
    """Validate a preprocessing dict and convert it to plain Python types."""
    merged = {**IMAGENET_PREPROCESSING, **dict(pre)}
    mean, std = [float(v) for v in merged["mean"]], [float(v) for v in merged["std"]]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UsageError(f"preprocessing needs 3 means and 3 positive stds, got mean={mean} std={std}")
    return {
        **merged,
        "mean": mean,
        "std": std,
        "interpolation": str(merged["interpolation"]),
        "crop_pct": float(merged["crop_pct"]),
    }
