"""InstanceSegmenter: the instance segmentation LightningModule (Mask R-CNN) on the kit's R-CNN task base.

Batches are ``(images, targets)`` lists (uint8 letterboxed images; targets with ``boxes``,
``labels``, ``iscrowd``, ``masks``, ``image_id``). Training sums Mask R-CNN's losses (crowd
instances left out); validation and test run COCO evaluation with faster_coco_eval over every
process's images, each counted once: ``val/mask_map`` (mask AP@[.5:.95], what the task is
judged by), ``val/mask_map_50``, ``val/mask_map_75`` and the box ``val/map``, ``val/map_50``,
``val/map_75``. Every hyperparameter is saved: a checkpoint rebuilds the task alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from visionkit_core import ConfigError, ExportSpec, MediaSample, Prediction, TaskSpec, UsageError
from visionkit_core.kit.instances import RCNNTask, as_float, to_original
from visionkit_instance_segmentation import outputs

DEFAULT_BACKBONE = "timm:test_resnet"


class InstanceSegmenter(RCNNTask):
    """Instance segmentation: torchvision's Mask R-CNN by name, or Mask R-CNN heads over a feature backbone.

    Args:
        backbone: a registered backbone that gives feature maps (``timm:resnet18``, ``resnet18``),
            under an FPN and Mask R-CNN's heads; unused when ``arch`` names a torchvision model.
        num_classes, class_names: the object classes (from the annotations; no background).
        lr, weight_decay: AdamW with a per-step warmup then cosine schedule.
        arch: ``rcnn`` (heads over ``backbone``), or ``maskrcnn_resnet50_fpn`` /
            ``maskrcnn_resnet50_fpn_v2`` (torchvision's, backbone included).
        fpn_channels: FPN width over ``backbone`` (torchvision's own: 256).
        head_layers: conv layers of the mask head over ``backbone`` (torchvision's own: 4).
        anchor_scale: RPN anchor side per FPN level, in strides (4: 16 px anchors at stride 4).
        score_thresh, nms_thresh, detections_per_img: Mask R-CNN's postprocessing (what the
            metric sees; ``predict --threshold`` filters further).
        pretrained: ImageNet backbone weights (fails fast offline); weights: a local file for the
            backbone.
        backbone_options: ``--set backbone.*`` options of the backbone.
        rcnn_options: more keyword arguments for torchvision's ``MaskRCNN`` (``rpn_batch_size_per_image``).
    """

    visionkit_task = TaskSpec(
        name="instance-segmentation",
        monitor="val/mask_map",
        mode="max",
        needs=("class_names",),
        default_data="instance-shapes",
        default_backbone=DEFAULT_BACKBONE,
        predict_outputs=(".json", "dir"),
        export_formats=("onnx",),
        metrics=("val/mask_map", "val/mask_map_50", "val/mask_map_75", "val/map", "val/map_50", "train/loss"),
    )
    kind = "mask"
    iou_types = ("segm", "bbox")
    metric_names = {"segm": "mask_map", "bbox": "map"}

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        num_classes: int = 1,
        class_names: list[str] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        arch: str = "rcnn",
        fpn_channels: int = 64,
        head_layers: int = 2,
        anchor_scale: float = 4.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 50,
        pretrained: bool = False,
        weights: str | None = None,
        backbone_options: dict[str, Any] | None = None,
        rcnn_options: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.check_class_names(num_classes, class_names)
        if num_classes < 1:
            raise UsageError("instance segmentation needs at least one object class in the annotations")
        for option, value, low in (
            ("fpn_channels", fpn_channels, 8),
            ("head_layers", head_layers, 1),
            ("detections_per_img", detections_per_img, 1),
        ):
            if value < low:
                raise ConfigError(f"--set task.{option}={value}: must be at least {low}")
        if not (0.0 <= score_thresh < 1.0 and 0.0 < nms_thresh <= 1.0):
            raise ConfigError("--set task.score_thresh must be in [0, 1) and task.nms_thresh in (0, 1]")
        self.save_hyperparameters()
        post = {
            "box_score_thresh": score_thresh,
            "box_nms_thresh": nms_thresh,
            "box_detections_per_img": detections_per_img,
        }
        self.build(
            arch,
            backbone,
            num_classes,
            pretrained,
            weights,
            preprocessing,
            fpn_channels=fpn_channels,
            head_layers=head_layers,
            anchor_scale=anchor_scale,
            backbone_options=backbone_options,
            options={**post, **dict(rcnn_options or {})},
        )

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Tensor] | None]:
        """Per input: boxes, scores, labels, binary masks in original pixels (None: unreadable)."""
        images, sizes, oks = batch["image"], batch["size"], batch["ok"]
        result: list[dict[str, Tensor] | None] = []
        for i, det in enumerate(self(images)):
            ok = bool(oks[i])
            result.append(to_original(det, sizes[i], int(images[i].shape[-1])) if ok else None)
        return result

    # -- the contract's task methods ------------------------------------------------------------
    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        from visionkit_instance_segmentation.plots import InstancePlots

        return [InstancePlots(Path(run_dir))]

    def media_samples(self, batch: Any, limit: int) -> list[MediaSample]:
        """Up to ``limit`` images of ``batch`` with predicted masks drawn, true and predicted boxes."""
        import torch

        images, targets = [as_float(im) for im in batch[0][:limit]], batch[1][:limit]
        with torch.no_grad():
            preds = self(images)
        return outputs.media_samples(images, targets, preds, self.class_names)

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        threshold = options.get("threshold")
        return outputs.write_predictions(
            predictions,
            output,
            self.class_names,
            outputs.DEFAULT_THRESHOLD if threshold is None else float(threshold),
        )

    def export_spec(self, image_size: int) -> ExportSpec:
        from visionkit_instance_segmentation.export import export_spec

        return export_spec(self, int(image_size))
