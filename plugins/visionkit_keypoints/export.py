"""The exported Keypoint R-CNN: fixed-size float32 [0, 1] RGB in, fixed-shape top-K instances out.

The input (``(N, 3, S, S)`` letterboxed images, batch dynamic) and the first outputs (``boxes``
``(N, K, 4)``, ``scores`` ``(N, K)``, ``labels`` ``(N, K)``, -1 in empty slots) are those of the
kit's fixed-shape two-stage inference (:class:`visionkit_core.kit.rcnn_export.ExportedRCNN`);
then the keypoint head runs on the ``K`` boxes:

- ``keypoints`` ``(N, K, P, 3)`` float32 ``(x, y, score)`` per keypoint, in input pixels, in the
  order of ``keypoint_names`` (``score``: the heatmap logit at the peak; 0 in empty slots).

The heatmaps are decoded by the kit's fixed-shape
:func:`~visionkit_core.kit.rcnn_export.heatmaps_to_keypoints`: torchvision's decoding, exact for
boxes up to 64 pixels a side, in a 64-pixel window around the heatmap's peak for larger ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from visionkit_core import ExportSpec
from visionkit_core.kit.rcnn_export import (
    KEYPOINT_WINDOW,
    ExportedRCNN,
    heatmaps_to_keypoints,
    rcnn_export_spec,
)


class ExportedKeypointRCNN(ExportedRCNN):
    """The kit's fixed-shape R-CNN inference, then the keypoint head on the kept boxes."""

    def __init__(self, task: Any, image_size: int, window: int = KEYPOINT_WINDOW) -> None:
        super().__init__(task, image_size)
        roi = task.model.roi_heads
        self.keypoint_head, self.keypoint_predictor = roi.keypoint_head, roi.keypoint_predictor
        self.keypoint_pool, self.window = roi.keypoint_roi_pool, int(window)

    def heads(
        self, features: dict[str, Tensor], boxes: Tensor, labels: Tensor, keep: Tensor
    ) -> tuple[Tensor, ...]:
        """``(N, K, P, 3)`` keypoints ``(x, y, heatmap logit)`` of each box (0 in empty slots)."""
        n, k = boxes.shape[:2]
        maps = self.keypoint_predictor(self.keypoint_head(self.pool(self.keypoint_pool, features, boxes)))
        points = heatmaps_to_keypoints(maps, boxes.reshape(-1, 4), self.window)
        return (points.reshape(n, k, -1, 3) * keep.view(n, k, 1, 1).to(points.dtype),)


def as_detections(outputs: tuple[Tensor, ...]) -> list[dict[str, Tensor]]:
    """The exported outputs as the task's ``forward`` gives them: empty slots dropped, keypoints
    ``(x, y, 1)`` with their scores apart (torchvision's ``keypoints`` and ``keypoints_scores``)."""
    result = []
    for boxes, scores, labels, points in zip(*outputs, strict=True):
        keep = labels >= 0
        kp = points[keep]
        result.append(
            {
                "boxes": boxes[keep],
                "scores": scores[keep],
                "labels": labels[keep],
                "keypoints": torch.cat([kp[..., :2], torch.ones_like(kp[..., 2:])], -1),
                "keypoints_scores": kp[..., 2],
            }
        )
    return result


def export_spec(task: Any, image_size: int) -> ExportSpec:
    """What ``visionkit export`` traces and checks, and what the sidecar says about the outputs."""
    keypoints = {
        "shape": ["batch", int(task.model.roi_heads.detections_per_img), len(task.keypoint_names), 3],
        "format": "x, y in input pixels (as boxes), score: the heatmap logit at the peak; 0 = empty slot",
        "names": list(task.keypoint_names),
        "skeleton": [list(edge) for edge in task.skeleton],
    }
    module = ExportedKeypointRCNN(task, image_size)
    return rcnn_export_spec(task, module, image_size, {"keypoints": keypoints}, as_detections)
