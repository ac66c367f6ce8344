"""Detector: the object detection LightningModule (a torchvision detector, or a torchvision head over timm).

Batches are ``(images, targets)`` lists: uint8 ``(3, S, S)`` images (scaled to [0, 1] on the
device; the detector normalises) and targets ``{"boxes": xyxy pixels, "labels": class indices,
"iscrowd", "image_id"}``. Training sums the detector's own losses; crowd boxes are left out of
training and ignored by the metric. Validation and test feed COCO evaluation (torchmetrics'
``MeanAveragePrecision`` with faster_coco_eval): ``val/map`` (IoU 0.50:0.95), ``val/map_50``,
``val/map_75``, ``val/mar_100`` and, with ``class_metrics``, ``val/map/<class>``. The metric
keeps every prediction and gathers them over processes before it computes
(:mod:`visionkit_detection.metric`), so a DDP run gives the mAP of the whole validation set,
each image counted once. Every hyperparameter is saved, so a checkpoint rebuilds the task
alone and never downloads weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionkit_core import ConfigError, ExportSpec, MediaSample, Prediction, TaskSpec, UsageError
from visionkit_core.kit.ema import ema_callbacks
from visionkit_core.kit.recipe import multi_scale_size, rescale_batch
from visionkit_core.kit.task import TaskBase, metric_key
from visionkit_detection import outputs
from visionkit_detection.metric import GatheredMAP
from visionkit_detection.networks import build_detector, family_of, label_offset, weight_targets

DEFAULT_BACKBONE = "timm:test_resnet"
GRADIENT_CLIP = 10.0  # detectors' losses spike early in training from scratch
SUMMARY_KEYS = ("map", "map_50", "map_75", "mar_100")


class Detector(TaskBase):
    """Object detection: a torchvision detector by name, or a torchvision head over a timm backbone.

    Args:
        backbone: ``timm:<model>`` under the head (``arch`` fcos/retinanet/fasterrcnn); unused
            when ``arch`` names a whole torchvision detector.
        num_classes, class_names: the object classes (from the annotations; no background).
        lr, weight_decay: AdamW, with a per-step warmup then cosine schedule.
        arch: ``fcos`` (default), ``retinanet``, ``fasterrcnn`` (a head over ``backbone``), or a
            torchvision detector: ``fasterrcnn_mobilenet_v3_large_320_fpn``, ``fasterrcnn_resnet50_fpn_v2``,
            ``retinanet_resnet50_fpn_v2``, ``fcos_resnet50_fpn``, ``ssdlite320_mobilenet_v3_large``, ...
        fpn_channels: FPN width of the head over a timm backbone (torchvision's own: 256).
        head_convs: conv layers per FCOS/RetinaNet head tower (torchvision's own: 4).
        extra_levels: add P6/P7 (strides 64, 128) for large objects in large images.
        score_thresh, nms_thresh, detections_per_img: the detector's postprocessing (what
            the metric sees; ``predict --threshold`` filters further).
        class_metrics: also log ``val/map/<class>`` every validation.
        pretrained: ImageNet backbone weights (fails fast offline); weights: a local file for
            the detector, its backbone or the backbone's trunk.
        ema, ema_decay: keep an exponential moving average of the weights for validation,
            checkpoints and export (the kit's :class:`~visionkit_core.kit.ema.EMA`; on by default,
            ``--set task.ema=false`` turns it off; ``--ema --ema-decay D`` sets the decay).
        multi_scale: multi-scale training: each batch is resized to a side drawn from
            ``image_size * [1 - m, 1 + m]`` (multiples of 32); 0 (default): off.
        backbone_options: ``--set backbone.*`` for a timm backbone (``drop_path_rate``, ...).
        detector_options: more keyword arguments for torchvision's detector constructor
            (``box_batch_size_per_image``, ``topk_candidates``, ``center_sampling_radius``, ...).
    """

    visionkit_task = TaskSpec(
        name="detection",
        monitor="val/map",
        mode="max",
        needs=("class_names",),
        default_data="shapes",
        default_backbone=DEFAULT_BACKBONE,
        predict_outputs=(".json", ".csv"),
        export_formats=("onnx", "torchscript"),
        metrics=("val/map", "val/map_50", "val/map_75", "val/mar_100", "val/map/<class>", "train/loss"),
    )

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        num_classes: int = 1,
        class_names: list[str] | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        arch: str = "fcos",
        fpn_channels: int = 64,
        head_convs: int = 2,
        extra_levels: bool = False,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        class_metrics: bool = False,
        pretrained: bool = False,
        weights: str | None = None,
        backbone_options: dict[str, Any] | None = None,
        detector_options: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        ema: bool = True,
        ema_decay: float = 0.999,
        multi_scale: float = 0.0,
    ) -> None:
        super().__init__()
        self.check_class_names(num_classes, class_names)
        if not 0.0 < ema_decay < 1.0:
            raise ConfigError(f"--set task.ema_decay={ema_decay}: must be between 0 and 1 (exclusive)")
        if not 0.0 <= multi_scale < 1.0:
            raise ConfigError(f"--set task.multi_scale={multi_scale}: must be in [0, 1)")
        if num_classes < 1:
            raise UsageError("detection needs at least one object class in the annotations")
        for option, value, low in (("fpn_channels", fpn_channels, 32), ("head_convs", head_convs, 1),
                                   ("detections_per_img", detections_per_img, 1)):  # fmt: skip
            if value < low:
                raise ConfigError(f"--set task.{option}={value}: must be at least {low}")
        if fpn_channels % 32:  # the heads' GroupNorm splits the channels into 16 or 32 groups
            raise ConfigError(f"--set task.fpn_channels={fpn_channels}: must be a multiple of 32")
        if not (0.0 <= score_thresh < 1.0 and 0.0 < nms_thresh <= 1.0):
            raise ConfigError("--set task.score_thresh must be in [0, 1) and task.nms_thresh in (0, 1]")
        self.save_hyperparameters()
        self.family = family_of(arch)
        self.label_offset = label_offset(self.family)
        self.model, net_pre = build_detector(
            arch,
            backbone,
            num_classes,
            pretrained,
            fpn_channels=fpn_channels,
            head_convs=head_convs,
            extra_levels=extra_levels,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            backbone_options=dict(backbone_options or {}),
            detector_options=dict(detector_options or {}),
        )
        if weights:
            self.load_weights_into(weight_targets(self.model), weights)
        self.use_preprocessing(net_pre, preprocessing, normalize=False)  # the detector normalises
        if preprocessing:  # normalisation recorded in a checkpoint wins over the network's default
            self.model.transform.image_mean = list(self.preprocessing["mean"])  # type: ignore[union-attr]
            self.model.transform.image_std = list(self.preprocessing["std"])  # type: ignore[union-attr]
        # One metric per phase: their states must never mix.
        for phase in ("val", "test"):
            setattr(self, f"{phase}_map", GatheredMAP(class_metrics=False))
        self.last_ap: dict[str, dict[str, float]] = {}  # per phase: the last per-class AP (-1: absent)
        self.last_eval_output: (
            tuple[list[Tensor], list[dict[str, Tensor]], list[dict[str, Tensor]]] | None
        ) = None

    @property
    def backbone(self) -> nn.Module:
        """The backbone's trunk (the FPN and heads train): what ``--freeze-backbone`` freezes."""
        return weight_targets(self.model)[-1]

    def configure_callbacks(self) -> list[Any]:
        """The EMA of the weights (``task.ema``), unless the run has one already (``--ema``)."""
        return ema_callbacks(
            self, bool(self.hparams.get("ema", False)), float(self.hparams.get("ema_decay", 0.999))
        )

    # -- data on the device --------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 images -> float [0, 1] (the detector normalises them itself)."""
        if isinstance(batch, dict) and isinstance(batch.get("image"), list):
            return {**batch, "image": [_float(im) for im in batch["image"]]}
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], list):
            return [_float(im) for im in batch[0]], batch[1]
        return batch

    # -- steps ---------------------------------------------------------------------------
    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections of float [0, 1] images: ``boxes`` (xyxy, input pixels), ``scores``, ``labels``
        (class indices into ``class_names``)."""
        was_training = self.model.training
        self.model.eval()  # torchvision detectors detect in eval mode only (in train mode they need targets)
        try:
            detections = self.model(list(images))
        finally:
            self.model.train(was_training)
        return [{**d, "labels": d["labels"] - self.label_offset} for d in detections]

    def training_step(self, batch: tuple[list[Tensor], list[dict[str, Tensor]]], batch_idx: int) -> Tensor:
        images, targets = batch
        train_targets = [
            {"boxes": t["boxes"][keep], "labels": t["labels"][keep] + self.label_offset}
            for t in targets
            for keep in [
                t["iscrowd"] == 0 if "iscrowd" in t else torch.ones_like(t["labels"], dtype=torch.bool)
            ]
        ]
        amount = float(self.hparams.get("multi_scale", 0.0))
        if amount > 0 and images:
            side = multi_scale_size(int(images[0].shape[-1]), amount, self.global_step)
            images, train_targets = rescale_batch(images, train_targets, side)
        losses = self.model(list(images), train_targets)
        loss = sum(losses.values())
        n = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        for key, value in losses.items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        return loss  # type: ignore[return-value]

    def validation_step(self, batch: tuple[list[Tensor], list[dict[str, Tensor]]], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[list[Tensor], list[dict[str, Tensor]]], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_step(self, phase: str, batch: tuple[list[Tensor], list[dict[str, Tensor]]]) -> None:
        images, targets = batch
        preds = self(images)
        self.last_eval_output = (images, targets, preds)  # for the plots: no second forward
        truth = [
            {
                "boxes": t["boxes"],
                "labels": t["labels"],
                "iscrowd": t.get("iscrowd", torch.zeros_like(t["labels"])),
                **({"image_id": t["image_id"]} if "image_id" in t else {}),
            }
            for t in targets
        ]
        getattr(self, f"{phase}_map").update(preds, truth)

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    def _per_class_due(self) -> bool:
        """Per-class AP (a second COCO evaluation) when asked, at the last epoch of fit, and outside fit."""
        if self.hparams.class_metrics or self._trainer is None:
            return True
        trainer = self.trainer
        if trainer.state.fn != "fit":  # visionkit validate / test
            return True
        last = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - 1
        return bool(last and not trainer.sanity_checking)

    def _log_map(self, phase: str) -> None:
        metric: GatheredMAP = getattr(self, f"{phase}_map")
        metric.class_metrics = self._per_class_due()
        result = metric.compute()  # gathered over processes: every rank logs the same values
        metric.reset()
        for key in SUMMARY_KEYS:
            value = float(result[key])
            self.log(f"{phase}/{key}", max(value, 0.0), prog_bar=key in ("map", "map_50"))
        if metric.class_metrics:
            per_class = outputs.per_class_ap(result, self.class_names)
            self.last_ap[phase] = per_class
            if self.hparams.class_metrics:
                for name, value in per_class.items():
                    if value >= 0:
                        self.log(f"{phase}/map/{metric_key(name)}", value)

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Tensor] | None]:
        """Per input: boxes in the original image's pixels, scores and class indices (None: unreadable)."""
        images = batch["image"] if isinstance(batch, dict) else batch
        sizes = batch.get("size") if isinstance(batch, dict) else None
        oks = batch.get("ok") if isinstance(batch, dict) else None
        detections = self(images)
        result: list[dict[str, Tensor] | None] = []
        for i, det in enumerate(detections):
            if oks is not None and not bool(oks[i]):
                result.append(None)
                continue
            size = tuple(sizes[i]) if sizes is not None else tuple(images[i].shape[-2:])
            result.append(outputs.to_original(det, size, int(images[i].shape[-1])))  # type: ignore[arg-type]
        return result

    # -- the contract's task methods -----------------------------------------------------------
    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        from visionkit_detection.plots import DetectionPlots

        return [DetectionPlots(Path(run_dir))]

    def media_samples(self, batch: Any, limit: int) -> list[MediaSample]:
        """Up to ``limit`` images of ``batch`` with their true and predicted boxes (score >= 0.3)."""
        images, targets = batch[0][:limit], batch[1][:limit]
        floats = [_float(im) for im in images]
        with torch.no_grad():
            preds = self(floats)
        return outputs.media_samples(floats, targets, preds)

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        threshold = options.get("threshold")
        return outputs.write_predictions(
            predictions,
            output,
            self.class_names,
            outputs.DEFAULT_THRESHOLD if threshold is None else float(threshold),
            bool(options.get("overlay")),
        )

    def export_spec(self, image_size: int) -> ExportSpec:
        from visionkit_detection.export import export_spec

        return export_spec(self, int(image_size))

    # -- optimisation (the kit's AdamW + warmup/cosine) ------------------------------------
    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """The Trainer's clipping when set (``--gradient-clip``), else a norm of :data:`GRADIENT_CLIP`."""
        if gradient_clip_val is None:
            gradient_clip_val, gradient_clip_algorithm = GRADIENT_CLIP, "norm"
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


def _float(image: Tensor) -> Tensor:
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
