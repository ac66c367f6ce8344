"""Detector: the object detection LightningModule (a torchvision detector, or a torchvision head over timm).

Batches are ``(images, truth)`` lists: uint8 ``(3, S, S)`` images (scaled to [0, 1] on the
device; the detector normalises) and one :class:`~visionkit_core.plugin.contract.Sample` per
image, ``{"boxes": xyxy pixels, "labels": class indices, "iscrowd", "image_id"}``; predictions are
Samples too (``last_eval_output`` is ``(images, truth, predictions)``, all lists). Training sums
the detector's own losses; crowd boxes are left out of training and ignored by the metric.
Validation and test feed COCO evaluation (torchmetrics' ``MeanAveragePrecision`` with
faster_coco_eval): ``val/map`` (IoU 0.50:0.95), ``val/map_50``, ``val/map_75``, ``val/mar_100``
and, with ``class_metrics``, ``val/map/<class>``. The metric keeps every prediction and gathers
them over processes before it computes (:mod:`visionkit_detection.metric`), so a DDP run gives
the mAP of the whole validation set, each image counted once. Every hyperparameter is saved, so
a checkpoint rebuilds the task alone and never downloads weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionkit_core import ConfigError, ExportSpec, TaskSpec
from visionkit_core.kit.ema import check_decay
from visionkit_core.kit.objects import ObjectTask
from visionkit_core.kit.recipe import multi_scale_size, rescale_batch
from visionkit_core.kit.task import metric_key
from visionkit_core.plugin.contract import Sample
from visionkit_detection import outputs
from visionkit_detection.metric import GatheredMAP
from visionkit_detection.networks import build_detector, family_of, label_offset, weight_targets

DEFAULT_BACKBONE = "timm:test_resnet"
SUMMARY_KEYS = ("map", "map_50", "map_75", "mar_100")


class Detector(ObjectTask):
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

    default_threshold = show_threshold = 0.3
    samples_figure = "detection_samples"
    visionkit_task = TaskSpec(
        name="detection",
        monitor="val/map",
        default_data="shapes",
        default_backbone=DEFAULT_BACKBONE,
        predict_outputs=(".json", ".csv"),
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
        check_decay(ema_decay)
        if not 0.0 <= multi_scale < 1.0:
            raise ConfigError(f"--set task.multi_scale={multi_scale}: must be in [0, 1)")
        self.save_hyperparameters()
        self.check_options({"fpn_channels": 32, "head_convs": 1, "detections_per_img": 1})
        if fpn_channels % 32:  # the heads' GroupNorm splits the channels into 16 or 32 groups
            raise ConfigError(f"--set task.fpn_channels={fpn_channels}: must be a multiple of 32")
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
        self.set_model_normalization()  # normalisation recorded in a checkpoint wins over the network's
        # One metric per phase: their states must never mix.
        for phase in ("val", "test"):
            setattr(self, f"{phase}_map", GatheredMAP(class_metrics=False))
        self.last_ap: dict[str, dict[str, float]] = {}  # per phase: the last per-class AP (-1: absent)
        self.last_eval_output: tuple[list[Tensor], list[Sample], list[Sample]] | None = None

    @property
    def backbone(self) -> nn.Module:
        """The backbone's trunk (the FPN and heads train): what ``--freeze-backbone`` freezes."""
        return weight_targets(self.model)[-1]

    # -- the kit's ObjectTask parts ---------------------------------------------------------
    def train_inputs(
        self, images: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """Multi-scale training (``multi_scale``): the batch resized to a side drawn per step."""
        amount = float(self.hparams.get("multi_scale", 0.0))
        if amount > 0 and images:
            side = multi_scale_size(int(images[0].shape[-1]), amount, self.global_step)
            images, targets = rescale_batch(images, targets, side)
        return images, targets

    def update_metrics(self, phase: str, preds: list[Sample], targets: Sequence[Sample]) -> None:
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

    draw_samples = outputs.media_samples
    write_objects = outputs.write_predictions

    def export_spec(self, image_size: int) -> ExportSpec:
        from visionkit_detection.export import export_spec

        return export_spec(self, int(image_size))

    def _per_class_due(self) -> bool:
        """Per-class AP (a second COCO evaluation) when asked, at the last epoch of fit, and outside fit."""
        if self.hparams.class_metrics or self._trainer is None:
            return True
        trainer = self.trainer
        if trainer.state.fn != "fit":  # visionkit validate / test
            return True
        last = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - 1
        return bool(last and not trainer.sanity_checking)

    def log_metrics(self, phase: str) -> None:
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
