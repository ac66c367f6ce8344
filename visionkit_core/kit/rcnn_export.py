"""torchvision's two-stage R-CNN inference written with fixed shapes, for ONNX export.

:class:`ExportedRCNN` takes ``(N, 3, S, S)`` float32 ``[0, 1]`` letterboxed images (batch
dynamic, ``S`` fixed: the anchors are computed for it) and runs what ``model.eval()(images)``
runs, with every shape fixed: the backbone and FPN, the RPN's per-level top-k proposals, NMS
over the whole batch at once (an offset per image and level, or image and class), suppressed
candidates kept with score 0 instead of dropped, the box head with the multi-scale RoIAlign
computed at every level and selected per box, then per-class NMS and the best ``K``
(``detections_per_img``). Its outputs start with

- ``boxes``  ``(N, K, 4)`` float32 xyxy in input pixels;
- ``scores`` ``(N, K)`` float32, best first; 0 marks an empty slot;
- ``labels`` ``(N, K)`` int64 class indices (background removed); -1 marks an empty slot;

and go on with what a subclass's :meth:`ExportedRCNN.heads` computes on the ``K`` boxes (Mask
R-CNN's mask probabilities, Keypoint R-CNN's keypoints: :func:`heatmaps_to_keypoints`).
:func:`rcnn_export_spec` is the :class:`~visionkit_core.ExportSpec` around such a module, with
the sidecar's input and output descriptions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import nms, roi_align

from visionkit_core import ExportSpec
from visionkit_core.kit.export import image_input

#: Boxes and keypoints are in pixels, scores in [0, 1]: float32 noise stays far below this.
TOLERANCE = 1e-2

#: :func:`heatmaps_to_keypoints` resizes a heatmap to its box's size in a window of this many
#: pixels per side around the heatmap's peak: exact for boxes up to this size.
KEYPOINT_WINDOW = 64


class ExportedRCNN(nn.Module):
    """Normalise, backbone + FPN, RPN proposals, box head, per-class NMS: all fixed-shape.

    ``task.model`` is a torchvision ``MaskRCNN``/``KeypointRCNN``/``FasterRCNN`` (in eval mode it
    gives what this module gives); ``task.preprocessing`` has its ``mean`` and ``std``. A subclass
    implements :meth:`heads`.
    """

    def __init__(self, task: Any, image_size: int) -> None:
        super().__init__()
        model, s = task.model, int(image_size)
        rpn, roi = model.rpn, model.roi_heads
        self.backbone, self.rpn_head, self.rpn_coder = model.backbone, rpn.head, rpn.box_coder
        self.box_head, self.box_predictor, self.box_coder = roi.box_head, roi.box_predictor, roi.box_coder
        self.box_pool = roi.box_roi_pool
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
        # every map's stride, as torchvision's MultiScaleRoIAlign infers it (a power of two per map)
        self.scales = {k: 2.0 ** round(math.log2(f.shape[-1] / s)) for k, f in features.items()}

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
        top, index = torch.where(kept, scores, torch.zeros_like(scores)).topk(min(k, m), dim=1)
        return top, index

    def detect(self, images: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, Tensor]:
        """The first stages: (the FPN's features, boxes ``(N, K, 4)`` (0 in empty slots), scores
        ``(N, K)``, labels ``(N, K)`` counted from 1 as torchvision's, ``keep`` ``(N, K)``: a slot
        holds an instance)."""
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
        return features, out_boxes, best, torch.gather(labels, 1, order), keep

    def heads(
        self, features: dict[str, Tensor], boxes: Tensor, labels: Tensor, keep: Tensor
    ) -> tuple[Tensor, ...]:
        """The per-instance outputs on the ``(N, K, 4)`` boxes (``labels`` from 1, ``keep`` as in
        :meth:`detect`); empty slots are the subclass's to mark."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features, boxes, scores, labels, keep = self.detect(images)
        out_labels = torch.where(keep, labels - 1, -torch.ones_like(labels))
        return (boxes, scores, out_labels, *self.heads(features, boxes, labels, keep))


def _cubic(d: Tensor) -> Tensor:
    """PyTorch's bicubic kernel (A = -0.75) at distance ``d``: 0 from 2 on."""
    a, x = -0.75, d.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _resize_axis(size_in: int, out: Tensor, peak: Tensor, window: int) -> tuple[Tensor, Tensor, Tensor]:
    """Along one axis, for ``(R,)`` output sizes and ``(R, P)`` peaks (input indices): the rows of
    ``F.interpolate(..., size=out, mode="bicubic")`` (align_corners False) in a ``window`` from the
    peak's output pixel, over the input padded by 2 repeated edge values a side: (weights
    ``(R, P, window, size_in + 4)``, the window's first output index ``(R, P)``, in-range
    ``(R, P, window)``)."""
    scale = (size_in / out)[:, None]  # PyTorch's source scale: input size / output size
    centre = torch.floor((peak.to(out.dtype) + 0.5) / scale - 0.5)  # the output pixel of the peak
    last = torch.clamp(out[:, None] - window, min=0.0)
    start = torch.minimum(torch.clamp(centre - (window // 2 - 1), min=0.0), last)
    index = start[..., None] + torch.arange(window, device=out.device, dtype=out.dtype)
    source = (scale[..., None] * (index + 0.5) - 0.5)[..., None]
    # over the input padded by 2 repeated edge values a side: the taps PyTorch clamps to the border
    taps = torch.arange(-2, size_in + 2, device=out.device, dtype=out.dtype)
    weights = _cubic(source - taps)
    return weights, start, index < out[:, None, None]


def heatmaps_to_keypoints(maps: Tensor, rois: Tensor, window: int = KEYPOINT_WINDOW) -> Tensor:
    """Keypoint R-CNN's decoding, fixed-shape: ``(R, P, H, W)`` heatmaps on ``(R, 4)`` xyxy boxes ->
    ``(R, P, 3)`` ``(x, y, score)``.

    torchvision (``heatmaps_to_keypoints``) resizes each box's heatmaps bicubically to the box's
    size rounded up, a size of its own per box, and takes each keypoint's peak: its position
    (pixel centre, scaled back to the box) and value. Here the resized map is computed as
    ``rows @ heatmap @ cols^T`` with PyTorch's bicubic weights, in a ``window`` x ``window`` block
    around the peak of the heatmap itself: the whole map for boxes up to ``window`` pixels (the
    same peak as torchvision's, up to float rounding), the neighbourhood of the heatmap's peak for
    larger ones (a different peak only when another, far from it, ends higher after resizing).
    """
    r, p, h, w = maps.shape
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    out_w, out_h = widths.ceil(), heights.ceil()
    peak = maps.reshape(r, p, h * w).argmax(-1)
    rows, y0, y_ok = _resize_axis(h, out_h, torch.div(peak, w, rounding_mode="floor"), window)
    cols, x0, x_ok = _resize_axis(w, out_w, peak % w, window)
    padded = torch.nn.functional.pad(maps, (2, 2, 2, 2), mode="replicate")
    resized = rows @ padded @ cols.transpose(-1, -2)  # (R, P, window, window)
    inside = y_ok[..., :, None] & x_ok[..., None, :]
    lowest = torch.full_like(resized, torch.finfo(resized.dtype).min)
    flat = torch.where(inside, resized, lowest).reshape(r, p, window * window)
    at = flat.argmax(-1)  # the first of equal values, as torchvision's argmax
    score = torch.gather(flat, 2, at[..., None])[..., 0]
    x = (x0 + at % window + 0.5) * (widths / out_w)[:, None] + rois[:, 0:1]
    y = (y0 + torch.div(at, window, rounding_mode="floor") + 0.5) * (heights / out_h)[:, None] + rois[:, 1:2]
    return torch.stack([x, y, score], -1)


def rcnn_export_spec(
    task: Any,
    module: Any,
    image_size: int,
    outputs: Mapping[str, Mapping[str, Any]],
    task_forward: Callable[[tuple[Tensor, ...]], list[dict[str, Tensor]]],
    tolerance: float = TOLERANCE,
    inputs: tuple[Tensor, Tensor] | None = None,
) -> ExportSpec:
    """The :class:`~visionkit_core.ExportSpec` of ``module`` (an :class:`ExportedRCNN`, or any
    module with its fixed-shape ``boxes``, ``scores``, ``labels`` outputs and its ``detections``,
    ``score_thresh`` and ``nms_thresh``: the detection task's): traced on 2 random images, checked
    on 3 (``inputs``: other ``(example, check)`` batches); the sidecar describes ``boxes``,
    ``scores``, ``labels`` and then ``outputs`` (name -> its description, in the order
    :meth:`ExportedRCNN.heads` returns them); ``task_forward`` turns the outputs into what the
    task's ``forward`` gives (one dict per image, empty slots dropped)."""
    module = module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    example, check = inputs or (
        torch.rand(2, 3, image_size, image_size, generator=gen),
        torch.rand(3, 3, image_size, image_size, generator=gen),
    )
    k = module.detections
    sidecar: dict[str, Any] = {
        "task": task.visionkit_task.name,
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
            **{name: dict(value) for name, value in outputs.items()},
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
    names = ["boxes", "scores", "labels", *outputs]
    return ExportSpec(
        module=module,
        example_input=example,
        check_input=check,
        input_names=["images"],
        output_names=names,
        dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
        sidecar=sidecar,
        tolerance=tolerance,
        task_forward=lambda exported, images: task_forward(exported(torch.stack(list(images)))),
    )
