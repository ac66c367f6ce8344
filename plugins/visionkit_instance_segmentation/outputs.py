"""What instance predictions become: COCO-RLE JSON, instance-id PNGs with drawn overlays, media samples.

``predict --output FILE.json`` writes one entry per image, in the original image's pixels::

    [{"path": "a.jpg", "instances": [{"label": "cat", "score": 0.91, "box": [x0, y0, x1, y1],
                                      "rle": {"size": [h, w], "counts": "..."}}, ...]}, ...]

(``rle`` is COCO's compressed RLE: ``pycocotools.mask.decode`` gives the mask back.)
``--output DIR`` writes ``DIR/<stem>.png`` (an 8-bit, or 16-bit past 255 instances, image of
instance ids: 0 background, 1.. the instances best score first, as listed in the JSON) and
``DIR/<stem>_drawn.png`` (the image with masks and boxes drawn), plus ``DIR/predictions.json``.
Only instances scoring at least the threshold are written; every file is written atomically.
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

from visionkit_core import MediaSample, Prediction, UsageError, atomic_write_bytes
from visionkit_core.kit.instances import BadImage, encode_mask, read_image

DEFAULT_THRESHOLD = 0.5
SHOW_THRESHOLD = 0.5
COLOURS = "#e6194b #3cb44b #4363d8 #f58231 #911eb4 #42d4f4 #f032e6 #bfef45 #469990 #9a6324 #800000".split()


def instances_of(
    pred: dict[str, Tensor], class_names: Sequence[str], threshold: float
) -> list[dict[str, Any]]:
    """The JSON instances of one image scoring at least ``threshold``, best first."""
    scores = pred["scores"].tolist()
    out = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if scores[i] < threshold:
            continue
        label = int(pred["labels"][i])
        out.append(
            {
                "label": class_names[label] if 0 <= label < len(class_names) else str(label),
                "score": round(float(scores[i]), 6),
                "box": [round(float(v), 3) for v in pred["boxes"][i].tolist()],
                "rle": encode_mask(pred["masks"][i].numpy()),
            }
        )
    return out


def write_predictions(
    predictions: list[Prediction], output: Path | None, class_names: Sequence[str], threshold: float
) -> list[str]:
    """Write ``output`` (a .json file, or a folder of PNGs) or return one summary line per image."""
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: an instance score threshold is between 0 and 1")
    kept = [(p, instances_of(p.value, class_names, threshold)) for p in predictions if p.value is not None]
    entries = [{"path": p.path, "instances": found} for p, found in kept]
    if output is None:
        return [
            f"{e['path']}: {len(e['instances'])} instances "
            + ", ".join(f"{i['label']} {i['score']:.2f}" for i in e["instances"][:10])
            for e in entries
        ]
    total = sum(len(e["instances"]) for e in entries)
    text = (json.dumps(entries, indent=1) + "\n").encode("utf-8")
    if output.suffix.lower() == ".json":
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output, text)
        return [f"{len(entries)} images, {total} instances (score >= {threshold:g}) -> {output}"]
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "predictions.json", text)
    used: dict[str, int] = {}
    for p, found in kept:
        stem = Path(p.path).stem
        used[stem] = used.get(stem, 0) + 1
        stem = stem if used[stem] == 1 else f"{stem}-{used[stem]}"  # one stem from two folders: keep both
        write_instance_pngs(p, found, output, stem, class_names, threshold)
    return [
        f"{len(entries)} images, {total} instances (score >= {threshold:g}) -> {output}/<stem>.png "
        f"(instance ids), <stem>_drawn.png, predictions.json"
    ]


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_instance_pngs(
    pred: Prediction,
    found: list[dict[str, Any]],
    folder: Path,
    stem: str,
    names: Sequence[str],
    threshold: float,
) -> None:
    """``<stem>.png`` (instance ids, best score first) and ``<stem>_drawn.png`` for one image."""
    value = pred.value
    order = [i for i in value["scores"].argsort(descending=True).tolist() if value["scores"][i] >= threshold]
    masks = value["masks"][order].bool()
    h, w = masks.shape[-2:] if len(order) else (pred.size or (1, 1))
    ids = np.zeros((h, w), dtype=np.uint16 if len(order) > 255 else np.uint8)
    for n in range(len(order) - 1, -1, -1):  # the best instance on top where masks overlap
        ids[masks[n].numpy()] = n + 1
    atomic_write_bytes(folder / f"{stem}.png", _png(ids))
    try:
        image = read_image(pred.path)
    except BadImage:
        return
    drawn = draw(
        image,
        masks,
        [i["box"] for i in found],
        [f"{i['label']} {i['score']:.2f}" for i in found],
        [int(value["labels"][i]) for i in order],
    )
    atomic_write_bytes(folder / f"{stem}_drawn.png", _png(drawn.permute(1, 2, 0).numpy()))


def draw(
    image: Tensor, masks: Tensor, boxes: list[list[float]], captions: list[str], labels: list[int]
) -> Tensor:
    """``image`` (uint8 CHW) with ``masks`` (bool N x H x W) filled and ``boxes`` drawn, per-class colours."""
    from torchvision.utils import draw_bounding_boxes

    if not len(boxes):
        return image
    colours = [COLOURS[c % len(COLOURS)] for c in labels]
    image = draw_masks(image, masks, labels)
    width = max(1, round(max(image.shape[-2:]) / 200))
    return draw_bounding_boxes(
        image, torch.tensor(boxes).float(), labels=captions, colors=colours, width=width
    )


def media_samples(
    images: Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]],
    preds: Sequence[dict[str, Tensor]],
    class_names: Sequence[str],
) -> list[MediaSample]:
    """MediaSamples: each image with its predicted masks drawn (score >= 0.5), true and predicted boxes."""
    result = []
    for image, target, pred in zip(images, targets, preds, strict=True):
        keep = pred["scores"].detach().cpu() >= SHOW_THRESHOLD
        picture = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        labels = [int(v) for v in pred["labels"].detach().cpu()[keep].tolist()]
        boxes = pred["boxes"].detach().cpu()[keep].tolist()
        masks = pred["masks"].detach().cpu()[keep][:, 0] > 0.5 if "masks" in pred else None
        if masks is not None and len(masks):
            picture = (
                draw(picture, masks, [], [], labels) if not boxes else draw_masks(picture, masks, labels)
            )
        result.append(
            MediaSample(
                image=np.ascontiguousarray(picture.permute(1, 2, 0).numpy()),
                caption=f"{len(target['labels'])} true, {int(keep.sum())} predicted",
                true_boxes=target["boxes"].detach().cpu().tolist(),
                true_labels=[int(v) for v in target["labels"].tolist()],
                pred_boxes=boxes,
                pred_labels=labels,
                pred_scores=[float(v) for v in pred["scores"].detach().cpu()[keep].tolist()],
                correct=int(keep.sum()) == len(target["labels"]),
            )
        )
    return result


def draw_masks(image: Tensor, masks: Tensor, labels: list[int]) -> Tensor:
    """``image`` (uint8 CHW) with ``masks`` (bool N x H x W) filled in their classes' colours."""
    from torchvision.utils import draw_segmentation_masks

    colours = [COLOURS[c % len(COLOURS)] for c in labels]
    return draw_segmentation_masks(image, masks.bool(), alpha=0.45, colors=colours)
