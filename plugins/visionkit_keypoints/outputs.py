"""What keypoint predictions become: JSON, drawn skeletons, media samples.

``predict --output FILE.json`` writes one entry per image, in the original image's pixels::

    [{"path": "a.jpg", "instances": [{"label": "person", "score": 0.91, "box": [x0, y0, x1, y1],
                                      "keypoints": [[x, y, score], ...]}, ...]}, ...]

with the keypoints in the order of the checkpoint's keypoint names (``score``: the heatmap
peak's logit as torchvision's Keypoint R-CNN gives it; higher is surer). ``--overlay`` also
writes each image with its skeletons drawn into ``<FILE stem>_drawn/``; ``--output DIR`` writes
``DIR/predictions.json`` and ``DIR/<stem>_drawn.png``. Only instances scoring at least the
threshold are written; every file is written atomically.
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
from visionkit_core.kit.instances import BadImage, read_image
from visionkit_core.kit.keypoints import draw_skeleton

DEFAULT_THRESHOLD = 0.5
SHOW_THRESHOLD = 0.5
TRUE_COLOUR = [(60, 220, 75)]
PRED_COLOUR = [(240, 40, 60)]


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
        xy = pred["keypoints"][i][:, :2].tolist()
        kp_scores = pred["keypoints_scores"][i].tolist() if "keypoints_scores" in pred else [1.0] * len(xy)
        out.append(
            {
                "label": class_names[label] if 0 <= label < len(class_names) else str(label),
                "score": round(float(scores[i]), 6),
                "box": [round(float(v), 3) for v in pred["boxes"][i].tolist()],
                "keypoints": [
                    [round(x, 3), round(y, 3), round(s, 4)] for (x, y), s in zip(xy, kp_scores, strict=True)
                ],
            }
        )
    return out


def write_predictions(
    predictions: list[Prediction],
    output: Path | None,
    class_names: Sequence[str],
    skeleton: Sequence[Sequence[int]],
    threshold: float,
    overlay: bool = False,
) -> list[str]:
    """Write ``output`` (a .json file, or a folder) or return one summary line per image."""
    if output is None and overlay:
        raise UsageError("--overlay needs --output FILE.json or DIR (drawn skeletons go next to it)")
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: an instance score threshold is between 0 and 1")
    entries: list[dict[str, Any]] = [
        {"path": p.path, "instances": instances_of(p.value, class_names, threshold)}
        for p in predictions
        if p.value is not None
    ]
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
        lines = [f"{len(entries)} images, {total} instances (score >= {threshold:g}) -> {output}"]
        if overlay:
            folder = output.with_name(f"{output.stem}_drawn")
            lines.append(f"{write_drawn(entries, folder, skeleton, '')} images with skeletons -> {folder}")
        return lines
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "predictions.json", text)
    drawn = write_drawn(entries, output, skeleton, "_drawn")
    return [f"{len(entries)} images, {total} instances -> {output}/predictions.json, {drawn} drawn images"]


def write_drawn(
    entries: list[dict[str, Any]], folder: Path, skeleton: Sequence[Sequence[int]], suffix: str
) -> int:
    """``folder/<stem><suffix>.png`` per image: the original image with its skeletons and boxes drawn."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    used: dict[str, int] = {}
    written = 0
    for entry in entries:
        try:
            image = read_image(entry["path"])
        except BadImage:
            continue
        stem = Path(entry["path"]).stem
        used[stem] = used.get(stem, 0) + 1
        stem = stem if used[stem] == 1 else f"{stem}-{used[stem]}"  # same stem from two folders
        drawn = draw(image, entry["instances"], skeleton)
        buffer = io.BytesIO()
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
        atomic_write_bytes(folder / f"{stem}{suffix}.png", buffer.getvalue())
        written += 1
    return written


def draw(image: Tensor, instances: list[dict[str, Any]], skeleton: Sequence[Sequence[int]]) -> Tensor:
    """``image`` (uint8 CHW) with the JSON instances' boxes, labels and skeletons drawn."""
    from torchvision.utils import draw_bounding_boxes

    if not instances:
        return image
    boxes = torch.tensor([i["box"] for i in instances], dtype=torch.float32)
    captions = [f"{i['label']} {i['score']:.2f}" for i in instances]
    image = draw_bounding_boxes(image, boxes, labels=captions, colors="white", width=1)
    keypoints = torch.tensor([i["keypoints"] for i in instances], dtype=torch.float32)
    return draw_skeleton(image, keypoints, skeleton)


def media_samples(
    images: Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]],
    preds: Sequence[dict[str, Tensor]],
    skeleton: Sequence[Sequence[int]],
) -> list[MediaSample]:
    """MediaSamples: the image with true skeletons (green) and predicted ones (red, score >= 0.5)
    drawn in, true and predicted boxes alongside, captioned with the instance counts."""
    result = []
    for image, target, pred in zip(images, targets, preds, strict=True):
        keep = pred["scores"].detach().cpu() >= SHOW_THRESHOLD
        shown = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        truth = target["keypoints"].detach().cpu().float()
        shown = draw_skeleton(shown, truth, skeleton, target["visibility"].cpu() > 0, TRUE_COLOUR)
        predicted = pred["keypoints"].detach().cpu().float()[keep]
        shown = draw_skeleton(shown, predicted, skeleton, colours=PRED_COLOUR)
        result.append(
            MediaSample(
                image=np.ascontiguousarray(shown.permute(1, 2, 0).numpy()),
                caption=f"{len(truth)} true, {int(keep.sum())} predicted",
                true_boxes=target["boxes"].detach().cpu().tolist(),
                true_labels=[int(v) for v in target["labels"].tolist()],
                pred_boxes=pred["boxes"].detach().cpu()[keep].tolist(),
                pred_labels=[int(v) for v in pred["labels"].detach().cpu()[keep].tolist()],
                pred_scores=[float(v) for v in pred["scores"].detach().cpu()[keep].tolist()],
            )
        )
    return result
