"""InstanceSegmenter: the instance segmentation LightningModule (Mask R-CNN) on the kit's R-CNN task base.

Batches are ``(images, targets)`` lists (uint8 letterboxed images; targets with ``boxes``,
``labels``, ``iscrowd``, ``masks``, ``image_id``). Training sums Mask R-CNN's losses (crowd
instances left out); validation and test run COCO evaluation with faster_coco_eval over every
process's images, each counted once: ``val/mask_map`` (mask AP@[.5:.95], what the task is
judged by), ``val/mask_map_50``, ``val/mask_map_75`` and the box ``val/map``, ``val/map_50``,
``val/map_75``. Every hyperparameter is saved: a checkpoint rebuilds the task alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from visionkit_core import ExportSpec, MediaSample, Prediction, TaskSpec
from visionkit_core.kit.instances import RCNNTask
from visionkit_core.kit.objects import Objects
from visionkit_instance_segmentation import outputs

DEFAULT_BACKBONE = "timm:test_resnet"


class InstanceSegmenter(RCNNTask):
    """Instance segmentation: torchvision's Mask R-CNN by name, or Mask R-CNN heads over a feature backbone.

    Takes the options of every R-CNN task (:class:`~visionkit_core.kit.instances.RCNNTask`):
    ``arch`` is ``rcnn`` (heads over ``backbone``), ``maskrcnn_resnet50_fpn`` or
    ``maskrcnn_resnet50_fpn_v2`` (torchvision's, backbone included); ``head_layers`` counts the
    mask head's conv layers (torchvision's own: 4); ``rcnn_options`` go to torchvision's ``MaskRCNN``.
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
    ap_name, ap_column, samples_figure = "mask AP", "mask_ap", "instance_samples"
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
        self.save_hyperparameters()
        self.build()

    # -- the kit's ObjectTask parts -----------------------------------------------------------------
    def draw_samples(
        self, images: Sequence[Tensor], targets: Sequence[Objects], preds: Sequence[Objects]
    ) -> list[MediaSample]:
        """Each image with its predicted masks drawn, true and predicted boxes."""
        return outputs.media_samples(images, targets, preds, self.show_threshold)

    def write_objects(
        self, predictions: list[Prediction], output: Path | None, threshold: float, options: Mapping[str, Any]
    ) -> list[str]:
        return outputs.write_predictions(predictions, output, self.class_names, threshold)

    def export_spec(self, image_size: int) -> ExportSpec:
        from visionkit_instance_segmentation.export import export_spec

        return export_spec(self, int(image_size))
