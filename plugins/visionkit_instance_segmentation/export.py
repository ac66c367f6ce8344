"""The exported Mask R-CNN: fixed-size float32 [0, 1] RGB in, fixed-shape top-K instances out.

Inputs are ``(N, 3, S, S)`` letterboxed images (longer side resized to ``S``, padded with black
at the right and bottom: what ``predict`` does), batch dynamic, ``S`` fixed (the anchors are
computed for it). Outputs:

- ``boxes``  ``(N, K, 4)`` float32 xyxy in input pixels;
- ``scores`` ``(N, K)`` float32, best first; 0 marks an empty slot;
- ``labels`` ``(N, K)`` int64 class indices into ``class_names``; -1 marks an empty slot;
- ``masks``  ``(N, K, M, M)`` float32 mask probabilities inside each box (M = 28, Mask R-CNN's
  own output; resize one to its box and threshold at 0.5 to paste it into the image).

``K`` is ``detections_per_img``. torchvision's two-stage inference is written here with fixed
shapes: per-level top-k proposals, NMS over the whole batch at once (an offset per image and
level, or image and class), suppressed candidates kept with score 0 instead of dropped, and the
multi-scale RoIAlign computed at every level and selected per box. So the exported graph gives
the instances of ``visionkit predict`` (before its ``--threshold``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import nms, roi_align

from visionkit_core import ExportSpec
from visionkit_core.kit.export import image_input

#: Boxes are in pixels and scores/mask probabilities in [0, 1]: float32 noise stays far below this.
TOLERANCE = 1e-2


class ExportedMaskRCNN(nn.Module):
    """Normalise, backbone + FPN, RPN proposals, box head, per-class NMS, mask head: all fixed-shape."""

    def __init__(self, task: Any, image_size: int) -> None:
        super().__init__()
        model, s = task.model, int(image_size)
        rpn, roi = model.rpn, model.roi_heads
        self.backbone, self.rpn_head, self.rpn_coder = model.backbone, rpn.head, rpn.box_coder
        self.box_head, self.box_predictor, self.box_coder = roi.box_head, roi.box_predictor, roi.box_coder
        self.mask_head, self.mask_predictor = roi.mask_head, roi.mask_predictor
        self.box_pool, self.mask_pool = roi.box_roi_pool, roi.mask_roi_pool
        self.image_size, self.pre_nms, self.post_nms = s, int(rpn.pre_nms_top_n()), int(rpn.post_nms_top_n())
        self.rpn_nms, self.score_thresh = float(rpn.nms_thresh), float(roi.score_thresh)
        self.nms_thresh, self.detections = float(roi.nms_thresh), int(roi.detections_per_img)
        self.register_buffer("mean", torch.tensor(task.preprocessing["mean"]).view(1, 3, 1, 1).float())
        self.register_buffer("std", torch.tensor(task.preprocessing["std"]).view(1, 3, 1, 1).float())
        was_training = model.training
        model.eval()  # a forward in training mode would move BatchNorm's running statistics
        try:
            with torch.no_grad():
                x = torch.zeros(1, 3, s, s)
                features = self.backbone((x - self.mean) / self.std)
                anchors = rpn.anchor_generator(ImageList(x, [(s, s)]), list(features.values()))[0]
        finally:
            model.train(was_training)
        self.register_buffer("anchors", anchors.float())
        per_location = anchors.shape[0] // sum(int(f.shape[-2] * f.shape[-1]) for f in features.values())
        self.per_level = [int(f.shape[-2] * f.shape[-1]) * per_location for f in features.values()]
        # the pooled levels' strides, as torchvision infers them (a power of two per map)
        self.scales = {
            k: 2.0 ** round(math.log2(features[k].shape[-1] / s)) for k in self.box_pool.featmap_names
        }

    def pool(self, pooler: Any, features: dict[str, Tensor], boxes: Tensor) -> Tensor:
        """MultiScaleRoIAlign of ``(N, B, 4)`` boxes, fixed-shape: every level computed, one kept per box."""
        n, b = boxes.shape[:2]
        flat = boxes.reshape(-1, 4)
        index = torch.arange(n, device=boxes.device).repeat_interleave(b).to(flat.dtype)[:, None]
        rois = torch.cat([index, flat], 1)
        names = list(pooler.featmap_names)
        k_min, k_max = -math.log2(self.scales[names[0]]), -math.log2(self.scales[names[-1]])
        area = ((flat[:, 2] - flat[:, 0]) * (flat[:, 3] - flat[:, 1])).clamp(min=0)
        level = torch.floor(4 + torch.log2(torch.sqrt(area) / 224) + 1e-6).clamp(k_min, k_max) - k_min
        out = 0
        for i, name in enumerate(names):
            pooled = roi_align(
                features[name], rois, pooler.output_size, self.scales[name], pooler.sampling_ratio
            )
            out = out + pooled * (level == i).to(pooled.dtype)[:, None, None, None]
        return out  # type: ignore[return-value]

    def select(
        self, scores: Tensor, boxes: Tensor, groups: Tensor, thresh: float, k: int
    ) -> tuple[Tensor, Tensor]:
        """Batch-wide NMS (boxes of different ``groups`` never overlap), then the best ``k`` per image:
        (their scores, 0 where suppressed; their indices)."""
        n, m = scores.shape
        offset = (groups * (self.image_size + 1)).to(boxes.dtype).unsqueeze(-1)
        keep = nms((boxes + offset).reshape(-1, 4), scores.reshape(-1), thresh)
        flags = torch.zeros(n * m, dtype=scores.dtype, device=scores.device)
        kept = flags.scatter(0, keep, torch.ones_like(keep, dtype=scores.dtype)).reshape(n, m) > 0
        return torch.where(kept, scores, torch.zeros_like(scores)).topk(min(k, m), dim=1)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n, s = images.shape[0], float(self.image_size)
        features = self.backbone((images - self.mean) / self.std)
        levels = list(features.values())
        objectness, deltas = self.rpn_head(levels)
        obj = torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1) for o in objectness], 1)
        reg = torch.cat(
            [
                d.reshape(n, -1, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
                for d in deltas
            ],
            1,
        )
        proposals = self.rpn_coder.decode_single(reg.reshape(-1, 4), self.anchors.repeat(n, 1)).reshape(
            n, -1, 4
        )
        cand_scores, cand_boxes, cand_levels, start = [], [], [], 0
        for i, count in enumerate(self.per_level):  # top-k objectness per level
            top, idx = obj[:, start : start + count].topk(min(self.pre_nms, count), dim=1)
            cand_scores.append(torch.sigmoid(top))
            cand_boxes.append(torch.gather(proposals, 1, (idx + start).unsqueeze(-1).expand(-1, -1, 4)))
            cand_levels.append(torch.full_like(idx, i))
            start += count
        prob, boxes = torch.cat(cand_scores, 1), torch.cat(cand_boxes, 1).clamp(0.0, s)
        tiny = ((boxes[..., 2] - boxes[..., 0]) < 1e-3) | ((boxes[..., 3] - boxes[..., 1]) < 1e-3)
        prob = torch.where(tiny, torch.full_like(prob, -1.0), prob)
        image = torch.arange(n, device=images.device).unsqueeze(1)
        groups = image * len(self.per_level) + torch.cat(cand_levels, 1)
        best, order = self.select(prob, boxes, groups, self.rpn_nms, self.post_nms)
        valid = best > 0  # proposals torchvision keeps (not suppressed: 0, not tiny: -1)
        proposals = torch.gather(boxes, 1, order.unsqueeze(-1).expand(-1, -1, 4))
        p = proposals.shape[1]
        logits, regression = self.box_predictor(self.box_head(self.pool(self.box_pool, features, proposals)))
        c = logits.shape[-1]
        decoded = self.box_coder.decode_single(regression, proposals.reshape(-1, 4)).reshape(n, p, c, 4)
        decoded = decoded[:, :, 1:].clamp(0.0, s).reshape(n, -1, 4)  # class 0 is background
        scores = torch.softmax(logits, -1).reshape(n, p, c)[:, :, 1:] * valid.unsqueeze(-1).to(logits.dtype)
        labels = torch.arange(1, c, device=images.device).repeat(n, p, 1).reshape(n, -1)
        scores = scores.reshape(n, -1)
        small = ((decoded[..., 2] - decoded[..., 0]) < 1e-2) | ((decoded[..., 3] - decoded[..., 1]) < 1e-2)
        scores = torch.where((scores > self.score_thresh) & ~small, scores, torch.zeros_like(scores))
        best, order = self.select(scores, decoded, image * c + labels, self.nms_thresh, self.detections)
        keep = best > 0
        out_boxes = torch.gather(decoded, 1, order.unsqueeze(-1).expand(-1, -1, 4)) * keep.unsqueeze(-1)
        out_labels = torch.gather(labels, 1, order)
        k = out_boxes.shape[1]
        mask_logits = self.mask_predictor(self.mask_head(self.pool(self.mask_pool, features, out_boxes)))
        m = mask_logits.shape[-1]
        chosen = torch.gather(
            mask_logits.reshape(n, k, c, m, m), 2, out_labels.view(n, k, 1, 1, 1).expand(-1, -1, 1, m, m)
        )
        masks = torch.sigmoid(chosen[:, :, 0]) * keep.view(n, k, 1, 1).to(chosen.dtype)
        return out_boxes, best, torch.where(keep, out_labels - 1, -torch.ones_like(out_labels)), masks


def as_detections(outputs: tuple[Tensor, Tensor, Tensor, Tensor], image_size: int) -> list[dict[str, Tensor]]:
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
    module = ExportedMaskRCNN(task, image_size).eval()
    for param in module.parameters():
        param.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    example, check = (
        torch.rand(2, 3, image_size, image_size, generator=gen),
        torch.rand(3, 3, image_size, image_size, generator=gen),
    )
    k = module.detections
    sidecar: dict[str, Any] = {
        "task": "instance-segmentation",
        "class_names": list(task.class_names),
        "input": image_input(
            task.preprocessing,
            shape=["batch", 3, image_size, image_size],
            resize="letterbox: longer side to image_size (aspect kept), pad right and bottom with 0",
        ),
        "outputs": {
            "boxes": {
                "shape": ["batch", k, 4],
                "format": "xyxy, input pixels (divide by image_size / max(h, w))",
            },
            "scores": {"shape": ["batch", k], "meaning": "best first; 0 = empty slot"},
            "labels": {"shape": ["batch", k], "meaning": "index into class_names; -1 = empty slot"},
            "masks": {
                "shape": ["batch", k, 28, 28],
                "meaning": "mask probability inside the box; resize to the box and threshold at 0.5",
            },
        },
        "postprocessing": {
            "score_thresh": module.score_thresh,
            "nms_thresh": module.nms_thresh,
            "detections_per_img": k,
            "nms": "inside the model (class-aware)",
        },
        "arch": task.hparams.arch,
        "backbone": task.hparams.backbone,
    }
    names = ["boxes", "scores", "labels", "masks"]
    return ExportSpec(
        module=module,
        example_input=example,
        check_input=check,
        input_names=["images"],
        output_names=names,
        dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
        sidecar=sidecar,
        tolerance=TOLERANCE,
        task_forward=lambda exported, images: as_detections(exported(torch.stack(list(images))), image_size),
    )
