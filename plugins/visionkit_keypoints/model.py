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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from visionkit_core import ConfigError, ExportSpec, MediaSample, Prediction, TaskSpec, UsageError
from visionkit_core.kit import keypoints as kit_keypoints
from visionkit_core.kit.instances import RCNNTask, as_float, to_original
from visionkit_keypoints import outputs

DEFAULT_BACKBONE = "timm:test_resnet"


class KeypointTask(RCNNTask):
    """Keypoints: torchvision's Keypoint R-CNN by name, or Keypoint R-CNN heads over a feature backbone.

    Args:
        backbone: a registered backbone that gives feature maps (``timm:resnet18``, ``resnet18``),
            under an FPN and Keypoint R-CNN's heads; unused when ``arch`` names a torchvision model.
        num_classes, class_names: the object classes (from the annotations; no background).
        keypoint_names, skeleton: from the data: the K keypoints every instance has, and the
            edges (0-based index pairs) drawn between them.
        lr, weight_decay: AdamW with a per-step warmup then cosine schedule.
        arch: ``rcnn`` (heads over ``backbone``) or ``keypointrcnn_resnet50_fpn`` (torchvision's).
        fpn_channels: FPN width over ``backbone`` (torchvision's own: 256).
        head_layers: conv layers of the keypoint head over ``backbone`` (torchvision's own: 8).
        anchor_scale: RPN anchor side per FPN level, in strides.
        oks_sigmas: the OKS sigma of every keypoint (one value, or one per keypoint); default:
            COCO's for COCO's 17 person keypoints, 0.05 for any other.
        score_thresh, nms_thresh, detections_per_img: Keypoint R-CNN's postprocessing (what the
            metric sees; ``predict --threshold`` filters further).
        pretrained: ImageNet backbone weights (fails fast offline); weights: a local file for the
            backbone.
        backbone_options: ``--set backbone.*`` options; rcnn_options: more keyword arguments for
            torchvision's ``KeypointRCNN`` (``box_batch_size_per_image``, default 32 here, ...).
    """

    visionkit_task = TaskSpec(
        name="keypoints",
        monitor="val/kp_map",
        mode="max",
        needs=("class_names", "keypoint_names"),
        default_data="stick-figures",
        default_backbone=DEFAULT_BACKBONE,
        predict_outputs=(".json", "dir"),
        export_formats=(),  # Keypoint R-CNN's postprocessing has data-dependent shapes (export.py)
        metrics=("val/kp_map", "val/kp_map_50", "val/kp_map_75", "val/map", "val/map_50", "train/loss"),
    )
    kind = "keypoint"
    iou_types = ("keypoints", "bbox")
    metric_names = {"keypoints": "kp_map", "bbox": "map"}

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
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
        super().__init__()
        self.check_class_names(num_classes, class_names)
        if num_classes < 1:
            raise UsageError("keypoints needs at least one object class in the annotations")
        if not keypoint_names:
            raise UsageError(
                "keypoints needs the keypoint names from the data (COCO categories, YOLO kpt_shape)"
            )
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
        self.keypoint_names = [str(n) for n in keypoint_names]
        self.skeleton = kit_keypoints.check_skeleton(
            skeleton or [], len(self.keypoint_names), one_based=False
        )
        category = self.class_names[0] if num_classes == 1 else None
        self.sigmas = kit_keypoints.oks_sigmas(self.keypoint_names, category, oks_sigmas)
        post = {
            # 32 RoIs per image (torchvision: 512, the kit: 128) for the box head, so at most 8 positives
            # per image reach the keypoint head: training costs ~40% less, and small scenes hold few objects
            "box_batch_size_per_image": 32,
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
            sigmas=self.sigmas,
            fpn_channels=fpn_channels,
            head_layers=head_layers,
            anchor_scale=anchor_scale,
            num_keypoints=len(self.keypoint_names),
            backbone_options=backbone_options,
            options={**post, **dict(rcnn_options or {})},
        )

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Tensor] | None]:
        """Per input: boxes, scores, labels, keypoints ``(N, K, 3)`` and their scores in original
        pixels (None: unreadable)."""
        images, sizes, oks = batch["image"], batch["size"], batch["ok"]
        result: list[dict[str, Tensor] | None] = []
        for i, det in enumerate(self(images)):
            ok = bool(oks[i])
            result.append(to_original(det, sizes[i], int(images[i].shape[-1])) if ok else None)
        return result

    # -- the contract's task methods ------------------------------------------------------------
    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        from visionkit_keypoints.plots import KeypointPlots

        return [KeypointPlots(Path(run_dir))]

    def media_samples(self, batch: Any, limit: int) -> list[MediaSample]:
        """Up to ``limit`` images of ``batch`` with true and predicted skeletons drawn, and boxes."""
        import torch

        images, targets = [as_float(im) for im in batch[0][:limit]], batch[1][:limit]
        with torch.no_grad():
            preds = self(images)
        return outputs.media_samples(images, targets, preds, self.skeleton)

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        threshold = options.get("threshold")
        return outputs.write_predictions(
            predictions,
            output,
            self.class_names,
            self.skeleton,
            outputs.DEFAULT_THRESHOLD if threshold is None else float(threshold),
            bool(options.get("overlay")),
        )

    def export_spec(self, image_size: int) -> ExportSpec:
        from visionkit_keypoints.export import export_spec

        return export_spec(self, int(image_size))
