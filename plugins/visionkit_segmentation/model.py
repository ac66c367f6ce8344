"""Segmenter: the semantic segmentation LightningModule (smp or torchvision network, CE + Dice).

Batches are ``(images, truth)``: uint8 ``(N, 3, H, W)`` images, normalised on the device in
``on_after_batch_transfer``, and the batched :class:`~visionkit_core.plugin.contract.Sample`
``{"mask": int64 (N, H, W)}``; predictions are Samples too (``{"mask": ...}``, batched in
``last_eval_output``, one per input from ``predict_step``). The metrics come from one
confusion matrix per phase (torchmetrics, ``ignore_index`` honoured): ``val/miou`` is the
mean IoU over the classes present in the prediction or the truth (a class absent from both
has no IoU and is left out, not counted as 0 or 1), ``val/pixel_acc`` the share of
non-ignored pixels right, ``val/iou/<class>`` each class. Every hyperparameter is saved, so
``Segmenter.load_from_checkpoint(path)`` works alone and never downloads weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassConfusionMatrix

from visionkit_core import ConfigError, ExportSpec, MediaSample, Prediction, TaskSpec, UsageError
from visionkit_core.kit.ema import check_decay
from visionkit_core.kit.media import media_sample_of
from visionkit_core.kit.task import TaskBase, metric_key
from visionkit_core.plugin.contract import Sample
from visionkit_segmentation import outputs
from visionkit_segmentation.networks import build_network, weight_targets

#: backbone options passed to timm (``tu-`` encoders); the others mean nothing to an encoder.
TIMM_ENCODER_OPTIONS = ("drop_rate", "drop_path_rate")
#: The default encoder and Unet decoder widths, chosen by measurement (issue 18, docs/segmentation.md):
#: on 64 px scenes, 30 epochs from scratch, mobilenetv4_conv_small under a [64, 32, 16, 8] decoder
#: reached val/miou 0.88-0.90 at a third of the epoch cost of resnet18 under [128, 64, 32, 16] (0.92).
DEFAULT_BACKBONE = "timm:mobilenetv4_conv_small"
#: Unet/Unet++ decoder widths, deepest first, for 5 encoder stages (fewer stages: the last ones);
#: half of smp's own (256, 128, 64, 32, 16), which pass with ``--set task.decoder_channels=...``.
DECODER_CHANNELS = (128, 64, 32, 16, 8)
#: What a checkpoint without recorded widths was built with (visionkit 0.2: smp's widths).
LEGACY_DECODER_CHANNELS = (256, 128, 64, 32, 16)


class Segmenter(TaskBase):
    """Semantic segmentation: an smp architecture over an encoder, or a torchvision model.

    Args:
        backbone: the encoder (``timm:mobilenetv4_conv_small``, ``resnet18``, ``smp:mobilenet_v2``, ...).
        num_classes, class_names: the classes, background usually first (from the data).
        ignore_index: mask value left out of loss and metrics (255).
        lr, weight_decay: AdamW, with a per-step warmup then cosine schedule.
        arch: ``unet``, ``fpn``, ``deeplabv3plus`` (any smp architecture) or ``tv:<model>``.
        encoder_depth: encoder stages the decoder uses (smp ``unet``/``fpn``...; 5 = stride 32).
        decoder_channels: smp ``unet``/``unet++`` decoder widths (one per stage); None: the last
            ``encoder_depth`` of :data:`DECODER_CHANNELS`.
        dice: weight of the Dice loss added to the cross-entropy (0: CE only).
        pretrained: ImageNet encoder weights (fails fast offline); weights: a local encoder file.
        backbone_options: ``--set backbone.*`` (``drop_path_rate``, ``drop_rate`` for timm encoders).
        preprocessing: ``mean``/``std``; default: the encoder's.
        ema, ema_decay: keep an exponential moving average of the weights for validation,
            checkpoints and export (the kit's :class:`~visionkit_core.kit.ema.EMA`;
            ``--set task.ema=true``, or ``--ema [--ema-decay D]``; default off).
        channels_last: weights and images in channels-last memory format (NHWC), which oneDNN's
            CPU convolutions and GPU tensor cores run faster (the default network's training step
            on one CPU thread: 0.14 s instead of 0.21 s); the numbers are the same up to rounding.
    """

    tuple_batches = True  # a dataset's dict batches {"image", **truth} arrive as (images, truth)
    visionkit_task = TaskSpec(
        name="segmentation",
        monitor="val/miou",
        default_data="scenes",
        default_backbone=DEFAULT_BACKBONE,
        predict_outputs=("dir",),
        metrics=("val/miou", "val/pixel_acc", "val/loss", "val/iou/<class>", "test/miou", "train/loss"),
    )

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        ignore_index: int = 255,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        arch: str = "unet",
        encoder_depth: int = 4,
        decoder_channels: list[int] | None = None,
        dice: float = 0.0,
        pretrained: bool = False,
        weights: str | None = None,
        backbone_options: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        ema: bool = False,
        ema_decay: float = 0.999,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.check_class_names(num_classes, class_names)
        check_decay(ema_decay)
        if num_classes < 2:
            raise UsageError(
                f"segmentation needs at least 2 classes (background and one more), got {num_classes}"
            )
        if dice < 0:
            raise ConfigError(f"--set task.dice={dice}: the Dice weight must be >= 0")
        self.save_hyperparameters()
        encoder_pre = self._build_network(pretrained)
        if weights:
            self.load_weights_into(weight_targets(self.model), weights)
        self.use_preprocessing(encoder_pre, preprocessing)
        self.dice_loss: nn.Module | None = None
        if dice > 0:
            from segmentation_models_pytorch.losses import DiceLoss

            self.dice_loss = DiceLoss("multiclass", from_logits=True, ignore_index=ignore_index)
        # One confusion matrix per phase: their states must never mix.
        for phase in ("val", "test"):
            cm = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)
            setattr(self, f"{phase}_confmat", cm)
        self.last_iou: dict[str, list[float]] = {}  # per phase: the last epoch's per-class IoU (nan: absent)
        self.last_eval_output: tuple[Tensor, Sample, Sample] | None = None  # images, truth, prediction

    def _build_network(self, pretrained: bool) -> dict[str, Any]:
        """``self.model`` from the hparams (decoder widths recorded, so that a later change of the
        default keeps them; channels-last if asked); returns the encoder's preprocessing."""
        arch, backbone = str(self.hparams.arch), str(self.hparams.backbone)
        options = self._network_options(arch, backbone)
        if "decoder_channels" in options:
            self.hparams.decoder_channels = options["decoder_channels"]
        self.model, encoder_pre = build_network(
            arch, backbone, int(self.hparams.num_classes), pretrained, options
        )
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)
        return encoder_pre  # type: ignore[no-any-return]

    def _network_options(self, arch: str, backbone: str) -> dict[str, Any]:
        options = dict(self.hparams.backbone_options or {})
        unknown = [k for k in options if not (backbone.startswith("timm:") and k in TIMM_ENCODER_OPTIONS)]
        if unknown:
            raise ConfigError(
                f"--set backbone.{unknown[0]}: segmentation encoders take only "
                f"{', '.join(TIMM_ENCODER_OPTIONS)} (timm encoders); set the network with --set task.*"
            )
        if arch.startswith("tv:"):
            return options
        options["encoder_depth"] = self.hparams.encoder_depth
        if self.hparams.decoder_channels:
            options["decoder_channels"] = [int(c) for c in self.hparams.decoder_channels]
        elif arch.lower() in ("unet", "unetplusplus"):  # smp's default is sized for 5 stages
            options["decoder_channels"] = list(DECODER_CHANNELS[5 - int(self.hparams.encoder_depth) :])
        return options

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A Unet checkpoint without recorded decoder widths (visionkit 0.2) has smp's: rebuilt so."""
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("hyper_parameters", {})
        if saved.get("decoder_channels") is None and str(self.hparams.arch).lower() in (
            "unet",
            "unetplusplus",
        ):
            depth = int(self.hparams.encoder_depth)
            self.hparams.decoder_channels = list(LEGACY_DECODER_CHANNELS[5 - depth :])
            self._build_network(pretrained=False)

    @property
    def backbone(self) -> nn.Module:
        """The encoder: what ``--freeze-backbone`` freezes."""
        return weight_targets(self.model)[0]

    # -- steps ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, C, H, W)`` of normalised images ``(N, 3, H, W)``, any H and W."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)  # type: ignore[no-any-return]

    def loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        ignore = self.hparams.ignore_index
        if not bool((masks != ignore).any()):  # all ignored: CE would be 0/0 = nan
            return logits.sum() * 0.0
        loss = F.cross_entropy(logits, masks, ignore_index=ignore)
        if self.dice_loss is not None:
            loss = loss + self.hparams.dice * self.dice_loss(logits, masks)
        return loss

    def training_step(self, batch: tuple[Tensor, Sample], batch_idx: int) -> Tensor:
        images, truth = batch
        loss = self.loss(self(images), truth["mask"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Sample], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Sample], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_step(self, phase: str, batch: tuple[Tensor, Sample]) -> None:
        images, truth = batch
        logits = self(images)
        pred: Sample = {"mask": logits.argmax(dim=1)}
        self.last_eval_output = (images.detach(), truth, pred)  # for the plots: no second forward
        getattr(self, f"{phase}_confmat").update(pred["mask"], truth["mask"])
        loss = self.loss(logits, truth["mask"])
        self.log(f"{phase}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_confmat("val")

    def on_test_epoch_end(self) -> None:
        self._log_confmat("test")

    def _log_confmat(self, phase: str) -> None:
        cm: MulticlassConfusionMatrix = getattr(self, f"{phase}_confmat")
        matrix = cm.compute().double()  # synced over processes: every rank logs the same values
        cm.reset()
        iou, miou, pixel_acc = outputs.iou_from_confusion(matrix)
        self.last_iou[phase] = iou
        self.log(f"{phase}/miou", miou, prog_bar=True)
        self.log(f"{phase}/pixel_acc", pixel_acc)
        for name, value in zip(self.class_names, iou, strict=True):
            if not math.isnan(value):
                self.log(f"{phase}/iou/{metric_key(name)}", value)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[Sample | None]:
        """One ``{"mask": class indices}`` per input, at its original size (uint8 up to 256 classes;
        ``None`` for unreadable inputs)."""
        images = batch["image"] if isinstance(batch, dict) else batch
        sizes = outputs.sizes_of(batch, len(images), tuple(images.shape[-2:]))
        oks = batch.get("ok") if isinstance(batch, dict) else None
        logits = self(images).float()
        result: list[Sample | None] = []
        for i, (h, w) in enumerate(sizes):
            if oks is not None and not bool(oks[i]):
                result.append(None)
                continue
            resized = F.interpolate(logits[i : i + 1], size=(h, w), mode="bilinear", align_corners=False)
            mask = resized[0].argmax(dim=0).to(torch.uint8 if logits.shape[1] <= 256 else torch.int64)
            result.append({"mask": mask.cpu()})
        return result

    # -- the contract's task methods -----------------------------------------------------------
    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        from visionkit_segmentation.plots import SegmentationPlots

        return [SegmentationPlots(Path(run_dir))]

    def media_samples(self, batch: Any, limit: int) -> list[MediaSample]:
        """Up to ``limit`` images of an ``(images, truth)`` batch with their true and predicted masks."""
        images, truth = batch[0][:limit], batch[1]
        with torch.no_grad():
            logits = self(self.normalize(images) if images.dtype == torch.uint8 else images)
        return self.draw_samples(images, truth, {"mask": logits.argmax(dim=1)})

    def draw_samples(self, images: Tensor, truth: Sample, pred: Sample) -> list[MediaSample]:
        """MediaSamples (the kit's ``media_sample_of``: both masks, captioned with the pixel
        accuracy) of the first images of a batch (the model's input, or uint8) with their truth and
        prediction (batched Samples of as many images or more)."""
        shown = images if images.dtype == torch.uint8 else self.denormalize(images)
        masks = zip(shown, truth["mask"][: len(shown)], pred["mask"][: len(shown)], strict=True)
        return [media_sample_of(im, {"mask": t}, {"mask": p}, self.class_names) for im, t, p in masks]

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        return outputs.write_predictions(predictions, output, self.class_names, bool(options.get("overlay")))

    def export_spec(self, image_size: int) -> ExportSpec:
        from visionkit_segmentation.export import export_spec

        return export_spec(self, int(image_size))
