"""InstanceSegmenter: the instance segmentation LightningModule (Mask R-CNN) on the kit's R-CNN task base.

Batches are ``(images, targets)`` lists (uint8 letterboxed images; targets with ``boxes``,
``labels``, ``iscrowd``, ``masks``, ``image_id``). Training sums Mask R-CNN's losses (crowd
instances left out); validation and test run COCO evaluation with faster_coco_eval over every
process's images, each counted once: ``val/mask_map`` (mask AP@[.5:.95], what the task is
judged by), ``val/mask_map_50``, ``val/mask_map_75`` and the box ``val/map``, ``val/map_50``,
``val/map_75``. Every hyperparameter is saved: a checkpoint rebuilds the task alone.
"""

from __future__ import annotations

from visionkit_core import ExportSpec
from visionkit_core.kit.instances import RCNNTask, rcnn_task_spec
from visionkit_instance_segmentation import outputs


class InstanceSegmenter(RCNNTask):
    """Instance segmentation: torchvision's Mask R-CNN by name, or Mask R-CNN heads over a feature backbone.

    Takes the options of every R-CNN task (:class:`~visionkit_core.kit.instances.RCNNTask`):
    ``arch`` is ``rcnn`` (heads over ``backbone``), ``maskrcnn_resnet50_fpn`` or
    ``maskrcnn_resnet50_fpn_v2`` (torchvision's, backbone included); ``head_layers`` counts the
    mask head's conv layers (torchvision's own: 4); ``rcnn_options`` go to torchvision's ``MaskRCNN``.
    """

    visionkit_task = rcnn_task_spec("instance-segmentation", "mask_map", default_data="instance-shapes")
    kind = "mask"
    ap_name, ap_column, samples_figure = "mask AP", "mask_ap", "instance_samples"
    iou_types = ("segm", "bbox")
    metric_names = {"segm": "mask_map", "bbox": "map"}

    draw_samples = outputs.media_samples
    write_objects = outputs.write_predictions

    def export_spec(self, image_size: int) -> ExportSpec:
        from visionkit_instance_segmentation.export import export_spec

        return export_spec(self, int(image_size))
