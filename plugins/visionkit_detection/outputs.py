"""What detections become: boxes in original pixels, JSON/CSV files, drawn boxes, media samples, per-class AP.

``predict --output FILE.json`` writes one entry per image::

    [{"path": "a.jpg", "boxes": [{"label": "cat", "score": 0.91, "box": [x0, y0, x1, y1]}, ...]}, ...]

``FILE.csv`` one row per box (``path,label,score,x0,y0,x1,y1``). Boxes are in the original
image's pixels; only boxes scoring at least the threshold are written. ``--overlay`` also
writes each image with its boxes drawn (torchvision's ``draw_bounding_boxes``) into
``<FILE stem>_drawn/``. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from visionkit_core import MediaSample, Prediction, UsageError, write_csv
from visionkit_core.kit.objects import (
    draw_objects,
    media_sample,
    objects_json,
    to_uint8,
    write_drawn,
    write_json,
)
from visionkit_core.plugin.contract import Sample


def per_class_ap(result: dict[str, Tensor], class_names: Sequence[str]) -> dict[str, float]:
    """``{class: AP@[.5:.95]}`` from a MeanAveragePrecision result (-1: in neither truth nor prediction)."""
    values = {name: -1.0 for name in class_names}
    classes = result.get("classes")
    per = result.get("map_per_class")
    if classes is None or per is None:
        return values
    for cls, ap in zip(classes.reshape(-1).tolist(), per.reshape(-1).tolist(), strict=False):
        if 0 <= int(cls) < len(class_names):
            values[class_names[int(cls)]] = float(ap)
    return values


def write_predictions(
    task: Any, preds: list[Prediction], output: Path | None, threshold: float, options: Mapping[str, Any]
) -> list[str]:
    """The task's ``write_objects``: ``output`` (.json or .csv) and, with ``--overlay``, the drawn
    images next to it; or one summary line per image."""
    class_names, with_overlay = task.class_names, bool(options.get("overlay"))
    if with_overlay and output is None:
        raise UsageError("--overlay needs --output FILE.json or FILE.csv (drawn images go next to it)")
    entries = [
        {"path": p.path, "boxes": objects_json(p.value, class_names, threshold)}
        for p in preds
        if p.value is not None
    ]
    if output is None:
        return [_summary(e) for e in entries]
    if output.suffix.lower() == ".csv":
        rows = [[e["path"], b["label"], b["score"], *b["box"]] for e in entries for b in e["boxes"]]
        output.parent.mkdir(parents=True, exist_ok=True)
        write_csv(output, ["path", "label", "score", "x0", "y0", "x1", "y1"], rows)
    else:
        write_json(output, entries, indent=2)
    total = sum(len(e["boxes"]) for e in entries)
    lines = [f"{len(entries)} images, {total} boxes (score >= {threshold:g}) -> {output}"]
    if with_overlay:
        folder = output.with_name(f"{output.stem}_drawn")
        written = write_overlays(entries, folder, class_names)
        lines.append(f"{written} images with drawn boxes -> {folder}")
    return lines


def _summary(entry: dict[str, Any]) -> str:
    shown = ", ".join(f"{b['label']} {b['score']:.2f} {b['box']}" for b in entry["boxes"][:10])
    more = f" (+{len(entry['boxes']) - 10} more)" if len(entry["boxes"]) > 10 else ""
    return f"{entry['path']}: {len(entry['boxes'])} boxes" + (f": {shown}{more}" if entry["boxes"] else "")


def draw(image: Tensor, boxes: list[dict[str, Any]], class_names: Sequence[str]) -> Tensor:
    """``image`` (uint8 CHW) with ``boxes`` (JSON form) drawn and captioned ``label score``."""
    index = {n: i for i, n in enumerate(class_names)}
    captions = [f"{b['label']} {b['score']:.2f}" for b in boxes]
    return draw_objects(image, [b["box"] for b in boxes], captions, [index.get(b["label"], 0) for b in boxes])


def write_overlays(entries: list[dict[str, Any]], folder: Path, class_names: Sequence[str]) -> int:
    """``folder/<stem>.png`` per image: the original image with its boxes drawn."""
    return write_drawn(entries, folder, lambda image, entry: draw(image, entry["boxes"], class_names))


def all_found(target: dict[str, Tensor], pred: dict[str, Tensor], iou: float = 0.5) -> bool:
    """Whether the shown predictions are exactly the truth: each true box matched (same class, IoU >=
    ``iou``) by one predicted box, best scores first, and no predicted box left over."""
    from torchvision.ops import box_iou

    true_boxes, true_labels = target["boxes"].detach().cpu().float(), target["labels"].detach().cpu()
    boxes, labels = pred["boxes"].detach().cpu().float(), pred["labels"].detach().cpu()
    if len(boxes) != len(true_boxes):
        return False
    if not len(boxes):
        return True
    overlap = box_iou(boxes, true_boxes)
    overlap[labels[:, None] != true_labels[None, :]] = 0
    free = torch.ones(len(true_boxes), dtype=torch.bool)
    for i in pred["scores"].detach().cpu().argsort(descending=True).tolist():
        candidates = overlap[i] * free
        j = int(candidates.argmax())
        if candidates[j] < iou:
            return False
        free[j] = False
    return True


def media_samples(
    task: Any, images: Sequence[Tensor], targets: Sequence[Sample], preds: Sequence[Sample]
) -> list[MediaSample]:
    """The task's ``draw_samples``: MediaSamples (HWC uint8 image, true and predicted boxes) captioned
    with the box counts; ``correct`` when the boxes shown (score >= ``task.show_threshold``) are
    exactly the truth."""
    result = []
    for image, target, pred in zip(images, targets, preds, strict=True):
        keep = pred["scores"] >= task.show_threshold
        shown = {k: pred[k][keep] for k in ("boxes", "scores", "labels")}
        result.append(media_sample(to_uint8(image), target, pred, keep, all_found(target, shown)))
    return result
