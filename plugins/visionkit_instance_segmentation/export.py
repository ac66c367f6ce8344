"""The exported Mask R-CNN: fixed-size float32 [0, 1] RGB in, fixed-shape top-K instances out.

Inputs are ``(N, 3, S, S)`` letterboxed images (longer side resized to ``S``, padded with black
at the right and bottom: what ``predict`` does), batch dynamic, ``S`` fixed (the anchors are
computed for it). Outputs:

- ``boxes``  ``(N, K, 4)`` float32 xyxy in input pixels;
- ``scores`` ``(N, K)`` float32, best first; 0 marks an empty slot;
- ``labels`` ``(N, K)`` int64 class indices into ``class_names``; -1 marks an empty slot;
- ``masks``  ``(N, K, M, M)`` float32 mask probabilities inside each box (M = 28, Mask R-CNN's
  own output; resize one to its box and threshold at 0.5 to paste it into the image).

``K`` is ``detections_per_img``. The two-stage inference up to the ``K`` boxes is the kit's
fixed-shape one (:class:`visionkit_core.kit.rcnn_export.ExportedRCNN`); the mask head runs on
those boxes with the same fixed-shape RoIAlign. So the exported graph gives the instances of
``visionkit predict`` (before its ``--threshold``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from visionkit_core import ExportSpec
from visionkit_core.kit.rcnn_export import TOLERANCE, ExportedRCNN, rcnn_export_spec

__all__ = ["TOLERANCE", "ExportedMaskRCNN", "as_detections", "export_spec"]


class ExportedMaskRCNN(ExportedRCNN):
    """The kit's fixed-shape R-CNN inference, then the mask head on the kept boxes."""

    def __init__(self, task: Any, image_size: int) -> None:
        super().__init__(task, image_size)
        roi = task.model.roi_heads
        self.mask_head, self.mask_predictor, self.mask_pool = (
            roi.mask_head,
            roi.mask_predictor,
            roi.mask_roi_pool,
        )

    def heads(
        self, features: dict[str, Tensor], boxes: Tensor, labels: Tensor, keep: Tensor
    ) -> tuple[Tensor, ...]:
        """``(N, K, 28, 28)`` mask probabilities of each box's class (0 in empty slots)."""
        n, k = boxes.shape[:2]
        mask_logits = self.mask_predictor(self.mask_head(self.pool(self.mask_pool, features, boxes)))
        c, m = mask_logits.shape[1], mask_logits.shape[-1]
        chosen = torch.gather(
            mask_logits.reshape(n, k, c, m, m), 2, labels.view(n, k, 1, 1, 1).expand(-1, -1, 1, m, m)
        )
        return (torch.sigmoid(chosen[:, :, 0]) * keep.view(n, k, 1, 1).to(chosen.dtype),)


def as_detections(outputs: tuple[Tensor, ...], image_size: int) -> list[dict[str, Tensor]]:
    """The exported outputs as the task's ``forward`` gives them: empty slots dropped, masks pasted."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    result = []
    for boxes, scores, labels, masks in zip(*outputs, strict=True):
        keep = labels >= 0
        pasted = paste_masks_in_image(masks[keep][:, None], boxes[keep], (image_size, image_size))
        result.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep], "masks": pasted})
    return result


def export_spec(task: Any, image_size: int) -> ExportSpec:
    """What ``visionkit export`` traces and checks, and what the sidecar says about the outputs."""
    masks = {
        "shape": ["batch", int(task.model.roi_heads.detections_per_img), 28, 28],
        "meaning": "mask probability inside the box; resize to the box and threshold at 0.5",
    }
    return rcnn_export_spec(
        task,
        ExportedMaskRCNN(task, image_size),
        image_size,
        {"masks": masks},
        lambda outputs: as_detections(outputs, image_size),
    )
