"""The exported detection graph: fixed-size float32 [0, 1] RGB in, fixed-shape top-k detections out.

Inputs are ``(N, 3, S, S)`` letterboxed images (longer side resized to ``S``, padded with
black at the right and bottom: what ``predict`` does), batch dynamic, ``S`` fixed (the anchors
are computed for it). Outputs, fixed-shape so that they can be compared and served:

- ``boxes``  ``(N, K, 4)`` float32 xyxy in input pixels (divide by ``S / max(h, w)`` for the
  original image);
- ``scores`` ``(N, K)`` float32, best first; 0 marks an empty slot;
- ``labels`` ``(N, K)`` int64 class indices into ``class_names``; -1 marks an empty slot.

``K`` is the detector's ``detections_per_img``. The postprocessing is torchvision's for FCOS and
RetinaNet (score threshold, top-``topk_candidates`` per level, class-aware NMS, the best ``K``),
written with fixed shapes: candidates under the threshold are kept with score 0 instead of
being dropped, and NMS runs once over the whole batch with an offset per image and class. So
the exported model gives the boxes of ``visionkit predict`` (before its ``--threshold``).
Two-stage (Faster R-CNN) and SSD detectors are refused: their postprocessing is data-dependent
in ways torch cannot export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import nms

from visionkit_core import ExportSpec, UsageError
from visionkit_core.kit.rcnn_export import TOLERANCE, rcnn_export_spec
from visionkit_detection.networks import EXPORTABLE_FAMILIES, HEADS, TORCHVISION_DETECTORS

if TYPE_CHECKING:
    from visionkit_detection.model import Detector


class ExportedDetector(nn.Module):
    """Normalise, backbone + FPN, head, decode, threshold, per-level top-k, NMS, the best ``K``."""

    def __init__(self, task: Detector, image_size: int) -> None:
        super().__init__()
        model = task.model
        self.family = task.family
        self.backbone = model.backbone
        self.head = model.head
        self.box_coder = model.box_coder
        self.image_size = int(image_size)
        self.score_thresh = float(model.score_thresh)
        self.nms_thresh = float(model.nms_thresh)
        self.detections = int(model.detections_per_img)
        self.topk = int(model.topk_candidates)
        self.label_offset = int(task.label_offset)
        self.register_buffer("mean", torch.tensor(task.preprocessing["mean"]).view(1, 3, 1, 1).float())
        self.register_buffer("std", torch.tensor(task.preprocessing["std"]).view(1, 3, 1, 1).float())
        anchors, per_level = self._anchors(model)
        self.register_buffer("anchors", anchors)
        self.per_level = per_level  # anchors per pyramid level (python ints: static shapes)

    def _anchors(self, model: nn.Module) -> tuple[Tensor, list[int]]:
        s = self.image_size
        was_training = self.backbone.training
        self.backbone.eval()  # a forward in training mode would move BatchNorm's running statistics
        try:
            with torch.no_grad():
                x = torch.zeros(1, 3, s, s)
                features = list(self.backbone((x - self.mean) / self.std).values())
                anchors = model.anchor_generator(ImageList(x, [(s, s)]), features)[0]  # type: ignore[operator]
        finally:
            self.backbone.train(was_training)
        cells = [int(f.shape[-2] * f.shape[-1]) for f in features]
        per_location = anchors.shape[0] // sum(cells)  # FCOS 1, RetinaNet 9
        per_level = [c * per_location for c in cells]
        return anchors.float(), per_level

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = images.shape[0]
        x = (images - self.mean) / self.std
        out = self.head(list(self.backbone(x).values()))
        logits = out["cls_logits"]  # (N, A, C)
        num_classes = logits.shape[-1]
        if self.family == "fcos":
            scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(out["bbox_ctrness"]))
            boxes = self.box_coder.decode(out["bbox_regression"], self.anchors.unsqueeze(0))
        else:
            flat = self.box_coder.decode_single(
                out["bbox_regression"].reshape(-1, 4), self.anchors.repeat(n, 1)
            )
            boxes, scores = flat.reshape(n, -1, 4), torch.sigmoid(logits)
        boxes = boxes.clamp(0.0, float(self.image_size))
        cand_scores, cand_boxes, cand_labels = [], [], []
        start = 0
        for count in self.per_level:
            level = scores[:, start : start + count].reshape(n, -1)
            level = torch.where(level > self.score_thresh, level, torch.zeros_like(level))
            top, idx = level.topk(min(self.topk, count * num_classes), dim=1)
            anchor = idx // num_classes + start
            cand_scores.append(top)
            cand_labels.append(idx % num_classes)
            cand_boxes.append(torch.gather(boxes, 1, anchor.unsqueeze(-1).expand(-1, -1, 4)))
            start += count
        score = torch.cat(cand_scores, dim=1)  # (N, M)
        box = torch.cat(cand_boxes, dim=1)  # (N, M, 4)
        label = torch.cat(cand_labels, dim=1)  # (N, M)
        m = score.shape[1]
        # class-aware NMS for the whole batch at once: boxes of another image or class never overlap
        group = torch.arange(n, device=images.device).unsqueeze(1) * num_classes + label
        offset = (group * (self.image_size + 1)).to(box.dtype).unsqueeze(-1)
        keep = nms((box + offset).reshape(-1, 4), score.reshape(-1), self.nms_thresh)
        flags = torch.zeros(n * m, dtype=score.dtype, device=images.device)
        kept = flags.scatter(0, keep, torch.ones_like(keep, dtype=score.dtype)).reshape(n, m) > 0
        kept_scores = torch.where(kept, score, torch.zeros_like(score))
        best, order = kept_scores.topk(min(self.detections, m), dim=1)
        valid = best > 0
        out_boxes = torch.gather(box, 1, order.unsqueeze(-1).expand(-1, -1, 4)) * valid.unsqueeze(-1)
        out_labels = torch.where(
            valid, torch.gather(label, 1, order) - self.label_offset, -torch.ones_like(order)
        )
        return out_boxes, best, out_labels


def exportable(task: Detector) -> None:
    """Refuse a detector torch cannot export, naming the ones that work."""
    if task.family in EXPORTABLE_FAMILIES:
        return
    works = [h for h in HEADS if h in EXPORTABLE_FAMILIES] + [
        n for n, f in TORCHVISION_DETECTORS.items() if f in EXPORTABLE_FAMILIES
    ]
    raise UsageError(
        f"detector {task.hparams.arch!r} cannot be exported: its {task.family} postprocessing "
        f"(proposals / per-class selection of data-dependent size) has no fixed-shape form here. "
        f"Export works for: {', '.join(works)} (--set task.arch=...); use this checkpoint with "
        "`visionkit predict` instead"
    )


def export_spec(task: Detector, image_size: int) -> ExportSpec:
    """What ``visionkit export`` traces and checks, and what the sidecar says about the outputs
    (:func:`~visionkit_core.kit.rcnn_export.rcnn_export_spec`, on images with something to find)."""
    exportable(task)
    module = ExportedDetector(task, image_size)
    inputs = example_images(2, image_size, seed=0), example_images(3, image_size, seed=1)
    return rcnn_export_spec(task, module, image_size, {}, as_detections, TOLERANCE, inputs)


def as_detections(outputs: tuple[Tensor, Tensor, Tensor]) -> list[dict[str, Tensor]]:
    """The exported graph's fixed-shape outputs as the task's ``forward`` gives them (empty slots dropped)."""
    boxes, scores, labels = outputs
    return [
        {"boxes": b[keep], "scores": s[keep], "labels": lab[keep]}
        for b, s, lab in zip(boxes, scores, labels, strict=True)
        for keep in [lab >= 0]
    ]


def example_images(n: int, size: int, seed: int) -> Tensor:
    """Smooth random images with a few bright rectangles: inputs that give the detector something to find."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, max(1, size // 16), max(1, size // 16), generator=gen)
    images = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    for i in range(n):
        for _ in range(3):
            x0, y0 = (int(v) for v in torch.randint(0, max(1, size * 3 // 4), (2,), generator=gen))
            side = int(torch.randint(max(2, size // 10), max(3, size // 3), (1,), generator=gen))
            images[i, :, y0 : y0 + side, x0 : x0 + side] = torch.rand(3, 1, 1, generator=gen)
    return images.clamp(0.0, 1.0)
