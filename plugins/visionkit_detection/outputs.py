"""What detections become: boxes in original pixels, JSON/CSV files, drawn boxes, media samples, per-class AP.

``predict --output FILE.json`` writes one entry per image::

    [{"path": "a.jpg", "boxes": [{"label": "cat", "score": 0.91, "box": [x0, y0, x1, y1]}, ...]}, ...]

``FILE.csv`` one row per box (``path,label,score,x0,y0,x1,y1``). Boxes are in the original
image's pixels; only boxes scoring at least the threshold are written. ``--overlay`` also
writes each image with its boxes drawn (torchvision's ``draw_bounding_boxes``) into
``<FILE stem>_drawn/``. Every file is written atomically.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionkit_core import MediaSample, Prediction, UsageError, atomic_write_bytes, write_csv

#: ``predict`` writes boxes scoring at least this unless ``--threshold`` says otherwise.
DEFAULT_THRESHOLD = 0.3
#: Media samples and plots show predicted boxes scoring at least this.
SHOW_THRESHOLD = 0.3
COLOURS = "#e6194b #3cb44b #4363d8 #f58231 #911eb4 #42d4f4 #f032e6 #bfef45 #469990 #9a6324 #800000".split()


def to_original(det: dict[str, Tensor], size: tuple[int, int], image_size: int) -> dict[str, Tensor]:
    """Detections on the letterboxed ``image_size`` square -> the original ``(h, w)`` image's pixels.

    Boxes are clipped to the image; a box left with no width or height lay in the padding and goes.
    """
    h, w = int(size[0]), int(size[1])
    scale = image_size / max(h, w)
    boxes = det["boxes"].detach().float().cpu() / scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {
        "boxes": boxes[keep],
        "scores": det["scores"].detach().float().cpu()[keep],
        "labels": det["labels"].detach().cpu()[keep],
    }


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


def boxes_of(pred: dict[str, Tensor], class_names: Sequence[str], threshold: float) -> list[dict[str, Any]]:
    """The JSON boxes of one image's detections scoring at least ``threshold``, best first."""
    scores = pred["scores"].tolist()
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    out = []
    for i in order:
        if scores[i] < threshold:
            continue
        label = int(pred["labels"][i])
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        box = [round(float(v), 3) for v in pred["boxes"][i].tolist()]
        out.append({"label": name, "score": round(float(scores[i]), 6), "box": box})
    return out


def write_predictions(
    predictions: list[Prediction],
    output: Path | None,
    class_names: Sequence[str],
    threshold: float,
    with_overlay: bool,
) -> list[str]:
    """Write ``output`` (.json or .csv) and, with ``with_overlay``, the drawn images; or summarise."""
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: a detection score threshold is between 0 and 1")
    if with_overlay and output is None:
        raise UsageError("--overlay needs --output FILE.json or FILE.csv (drawn images go next to it)")
    entries = [
        {"path": p.path, "boxes": boxes_of(p.value, class_names, threshold)}
        for p in predictions
        if p.value is not None
    ]
    if output is None:
        return [_summary(e) for e in entries]
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".csv":
        rows = [[e["path"], b["label"], b["score"], *b["box"]] for e in entries for b in e["boxes"]]
        write_csv(output, ["path", "label", "score", "x0", "y0", "x1", "y1"], rows)
    else:
        atomic_write_bytes(output, (json.dumps(entries, indent=2) + "\n").encode("utf-8"))
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
    from torchvision.utils import draw_bounding_boxes

    if not boxes:
        return image
    index = {n: i for i, n in enumerate(class_names)}
    colours = [COLOURS[index.get(b["label"], 0) % len(COLOURS)] for b in boxes]
    xyxy = torch.tensor([b["box"] for b in boxes], dtype=torch.float32)
    width = max(1, round(max(image.shape[-2:]) / 200))
    captions = [f"{b['label']} {b['score']:.2f}" for b in boxes]
    return draw_bounding_boxes(image, xyxy, labels=captions, colors=colours, width=width)


def write_overlays(entries: list[dict[str, Any]], folder: Path, class_names: Sequence[str]) -> int:
    """``folder/<stem>.png`` per image: the original image with its boxes drawn."""
    from PIL import Image

    from visionkit_detection.data import BadImage, decode_image

    folder.mkdir(parents=True, exist_ok=True)
    used: dict[str, int] = {}
    written = 0
    for entry in entries:
        try:
            image = decode_image(entry["path"])
        except BadImage:
            continue
        drawn = draw(image, entry["boxes"], class_names)
        stem = Path(entry["path"]).stem
        used[stem] = used.get(stem, 0) + 1
        if used[stem] > 1:  # two inputs with one stem (from different folders): keep both
            stem = f"{stem}-{used[stem]}"
        buffer = io.BytesIO()
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
        atomic_write_bytes(folder / f"{stem}.png", buffer.getvalue())
        written += 1
    return written


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
    images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]], preds: Sequence[dict[str, Tensor]]
) -> list[MediaSample]:
    """MediaSamples (HWC uint8 image, true and predicted boxes) captioned with the box counts;
    ``correct`` when the boxes shown (score >= 0.3) are exactly the truth."""
    result = []
    for image, target, pred in zip(images, targets, preds, strict=True):
        keep = pred["scores"] >= SHOW_THRESHOLD
        shown_pred = {k: pred[k][keep] for k in ("boxes", "scores", "labels")}
        shown = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        true_boxes = target["boxes"].detach().cpu().tolist()
        result.append(
            MediaSample(
                image=np.ascontiguousarray(shown.permute(1, 2, 0).numpy()),
                caption=f"{len(true_boxes)} true, {int(keep.sum())} predicted",
                true_boxes=true_boxes,
                true_labels=[int(v) for v in target["labels"].tolist()],
                pred_boxes=pred["boxes"][keep].detach().cpu().tolist(),
                pred_labels=[int(v) for v in pred["labels"][keep].tolist()],
                pred_scores=[float(v) for v in pred["scores"][keep].tolist()],
                correct=all_found(target, shown_pred),
            )
        )
    return result
