"""ImageClassifier: the classification LightningModule wrapping any registered backbone.

Images arrive as uint8 ``(N, 3, H, W)`` tensors and are normalised on the device in
``on_after_batch_transfer``; ``forward`` takes normalised float images. Everything needed to
rebuild the model (backbone name, options, class names, preprocessing) is a hyperparameter,
so ``ImageClassifier.load_from_checkpoint(path)`` works alone and never downloads weights.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

from visionkit_classification.recipe import (
    backbone_modules,
    balanced_weights,
    check_class_weights,
    format_counts,
    make_mix,
    rank_zero_print,
)
from visionkit_core import (
    ExportSpec,
    MediaSample,
    Prediction,
    TaskSpec,
    UsageError,
    build_backbone,
    load_weights,
)

IMAGENET_PREPROCESSING: dict[str, Any] = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
    "crop_pct": 0.875,
}
#: Warmup length: at most one epoch and at most this share of all optimizer steps.
WARMUP_FRACTION = 0.1
#: The cosine schedule ends at this fraction of the base learning rate.
MIN_LR_RATIO = 0.01
#: Per-class recall is logged (``val/recall/<class>``, so it reaches summary.json) up to this many
#: classes; with more, ``plots/per_class_metrics.csv`` has it.
PER_CLASS_LOG_MAX = 100


class ImageClassifier(L.LightningModule):
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

    visionkit_task = TaskSpec(
        name="classification",
        monitor="val/acc",
        mode="max",
        needs=("class_names",),
        default_data="digits",
        default_backbone="resnet18",
        predict_outputs=(".csv", ".json"),
        export_formats=("onnx", "torchscript"),
        metrics=("val/acc", "val/loss", "val/acc_top5"),
    )

    norm_mean: Tensor
    norm_std: Tensor

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
        if class_names is not None and len(class_names) != num_classes:
            raise UsageError(f"got {len(class_names)} class names for num_classes={num_classes}")
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
            report = load_weights(self.model, weights)
            _rank_zero_print(f"visionkit: {report.summary()}")

        pre = preprocessing or getattr(self.model, "visionkit_preprocessing", None) or IMAGENET_PREPROCESSING
        self.preprocessing: dict[str, Any] = _plain_preprocessing(pre)
        mean = torch.tensor(self.preprocessing["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocessing["std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("norm_mean", mean, persistent=False)
        self.register_buffer("norm_std", std, persistent=False)

        self.mix = make_mix(num_classes, mixup, cutmix)
        weight = self._class_weight() if class_weights == "balanced" else None
        self.register_buffer("class_weight", weight, persistent=False)
        self._init_metrics(num_classes)

    _multilabel_task = False

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

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> ImageClassifier:
        """Lightning's ``load_from_checkpoint``; the checkpoint holds the weights, so by default
        nothing is downloaded (``pretrained=False``) or re-read (``weights=None``)."""
        kwargs.setdefault("pretrained", False)
        kwargs.setdefault("weights", None)
        return super().load_from_checkpoint(  # type: ignore[no-any-return]
            checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
        )

    # -- preprocessing on the device ----------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        names = self.hparams.class_names
        return list(names) if names else [str(i) for i in range(self.hparams.num_classes)]

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 ``[0, 255]`` or float ``[0, 1]`` images -> normalised float images."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        out = (x - self.norm_mean.float()) / self.norm_std.float()
        return out.to(self.norm_mean.dtype)  # float32, or the module's dtype under "64-true"/"bf16-true"

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalised images -> float images in ``[0, 1]`` (for display)."""
        return (x.float() * self.norm_std.float() + self.norm_mean.float()).clamp(0.0, 1.0)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise the uint8 images of a batch, on the device it was moved to."""
        if isinstance(batch, Tensor):
            return self.normalize(batch)
        if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
            items = [self.normalize(batch[0]), *batch[1:]]
            return items if isinstance(batch, list) else tuple(items)
        if isinstance(batch, dict) and isinstance(batch.get("image"), Tensor):
            return {**batch, "image": self.normalize(batch["image"])}
        return batch

    # -- steps ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of normalised float images ``(N, 3, H, W)``."""
        return self.model(x)  # type: ignore[no-any-return]

    def _shared_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        images, labels = batch[0], batch[1]
        logits = self(images)
        return self.loss_fn(logits, labels), logits, labels

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch[0], batch[1]
        targets = labels
        if self.mix is not None:
            images, targets = self.mix(images, labels)
        logits = self(images)
        loss = self.loss_fn(logits, targets)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_step(self, phase: str, batch: tuple[Tensor, Tensor]) -> None:
        loss, logits, labels = self._shared_step(batch)
        self.last_eval_output = (logits.detach(), labels)  # read by EvaluationPlots: no second forward
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

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Class probabilities ``(N, num_classes)``."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(images, dict):
            images = images["image"]
        return torch.softmax(self(images), dim=1)

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:  # type: ignore[override]
        """AdamW (no decay on biases/norms) and a per-step linear warmup + cosine schedule."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for param in self.parameters():
            if param.requires_grad:
                (decay if param.ndim > 1 else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total, warmup = self._schedule_lengths()
        scheduler = OwnGroupsLambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _schedule_lengths(self) -> tuple[int | None, int]:
        total_f = float(self.trainer.estimated_stepping_batches)
        if not math.isfinite(total_f) or total_f < 1:
            return None, 0
        total = int(total_f)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        per_epoch = max(1, total // epochs)
        return total, min(per_epoch, int(total * WARMUP_FRACTION))

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
        """Up to ``limit`` images of a ``(images, labels)`` batch captioned with truth and prediction."""
        images, labels = batch[0][:limit], batch[1][:limit]
        with torch.no_grad():
            preds = self(images).argmax(dim=1).tolist()
        shown = (self.denormalize(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        names = self.class_names
        return [
            MediaSample(image=img, caption=f"pred: {names[p]} / true: {names[t]}", correct=p == t)
            for img, p, t in zip(shown, preds, labels.tolist(), strict=True)
        ]


class OwnGroupsLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` over the param groups it was made with; groups added later keep the lr their
    adder gives them (``--freeze-backbone``: Lightning's BackboneFinetuning adds and steers the
    backbone's group when it unfreezes it)."""

    def get_lr(self) -> list[Any]:  # type: ignore[override]
        own = super().get_lr()
        return [*own, *(group["lr"] for group in self.optimizer.param_groups[len(own) :])]


def lr_factor(step: int, total: int | None, warmup: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if total is None:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress))


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


@rank_zero_only
def _rank_zero_print(message: str, stream: IO[str] | None = None) -> None:
    print(message, file=stream or sys.stderr)
