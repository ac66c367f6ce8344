"""KeypointTask: the keypoints LightningModule (Keypoint R-CNN) on the kit's R-CNN task base.

Batches are ``(images, targets)`` lists (uint8 letterboxed images; targets with ``boxes``,
``labels``, ``iscrowd``, ``keypoints`` ``(N, K, 2)``, ``visibility`` ``(N, K)``, ``image_id``).
Training sums Keypoint R-CNN's losses (crowd instances left out); validation and test run COCO
keypoint evaluation (OKS, with the per-keypoint sigmas of :func:`visionkit_core.kit.keypoints.oks_sigmas`)
with faster_coco_eval over every process's images, each counted once: ``val/kp_map`` (OKS AP@[.5:.95],
what the task is judged by), ``val/kp_map_50``, ``val/kp_map_75`` and the box ``val/map``,
``val/map_50``, ``val/map_75``. The keypoint names and skeleton come from the data and are saved
with every hyperparameter: a checkpoint rebuilds the task alone.
"""

from __future__ import annotations

from typing import Any

from visionkit_core import ExportSpec, UsageError
from visionkit_core.kit import keypoints as kit_keypoints
from visionkit_core.kit.instances import RCNN_BACKBONE, RCNNTask, rcnn_arguments, rcnn_task_spec
from visionkit_keypoints import outputs


class KeypointTask(RCNNTask):
    """Keypoints: torchvision's Keypoint R-CNN by name, or Keypoint R-CNN heads over a feature backbone.

    Takes the options of every R-CNN task (:class:`~visionkit_core.kit.instances.RCNNTask`):
    ``arch`` is ``rcnn`` (heads over ``backbone``) or ``keypointrcnn_resnet50_fpn`` (torchvision's);
    ``head_layers`` counts the keypoint head's conv layers (torchvision's own: 8); ``rcnn_options``
    go to torchvision's ``KeypointRCNN`` (``box_batch_size_per_image``: 32 here). And:

    Args:
        keypoint_names, skeleton: from the data: the K keypoints every instance has, and the
            edges (0-based index pairs) drawn between them.
        oks_sigmas: the OKS sigma of every keypoint (one value, or one per keypoint); default:
            COCO's for COCO's 17 person keypoints, 0.05 for any other.
    """

    visionkit_task = rcnn_task_spec(
        "keypoints", "kp_map", default_data="stick-figures", needs=("class_names", "keypoint_names")
    )
    kind = "keypoint"
    ap_name, ap_column, samples_figure = "OKS AP", "kp_ap", "keypoint_samples"
    # 32 RoIs per image (torchvision: 512, the kit: 128) for the box head, so at most 8 positives
    # per image reach the keypoint head: training costs ~40% less, and small scenes hold few objects
    rcnn_defaults = {"box_batch_size_per_image": 32}
    iou_types = ("keypoints", "bbox")
    metric_names = {"keypoints": "kp_map", "bbox": "map"}

    def __init__(
        self,
        backbone: str = RCNN_BACKBONE,
        num_classes: int = 1,
        class_names: list[str] | None = None,
        keypoint_names: list[str] | None = None,
        skeleton: list[list[int]] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        arch: str = "rcnn",
        fpn_channels: int = 64,
        head_layers: int = 4,
        anchor_scale: float = 4.0,
        oks_sigmas: float | list[float] | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 20,
        pretrained: bool = False,
        weights: str | None = None,
        backbone_options: dict[str, Any] | None = None,
        rcnn_options: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        if not keypoint_names:
            raise UsageError(
                "keypoints needs the keypoint names from the data (COCO categories, YOLO kpt_shape)"
            )
        super().__init__(**rcnn_arguments(locals()))

    def head_arguments(self) -> dict[str, Any]:
        """The keypoint names and skeleton from the data, the OKS sigmas; for the heads and the metric."""
        h = self.hparams
        self.keypoint_names = [str(n) for n in h.keypoint_names]
        self.skeleton = kit_keypoints.check_skeleton(
            h.skeleton or [], len(self.keypoint_names), one_based=False
        )
        category = self.class_names[0] if h.num_classes == 1 else None
        self.sigmas = kit_keypoints.oks_sigmas(self.keypoint_names, category, h.oks_sigmas)
        return {"sigmas": self.sigmas, "num_keypoints": len(self.keypoint_names)}

    draw_samples = outputs.media_samples
    write_objects = outputs.write_predictions

    def export_spec(self, image_size: int) -> ExportSpec:
        from visionkit_keypoints.export import export_spec

        return export_spec(self, int(image_size))
