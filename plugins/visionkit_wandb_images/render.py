"""Turn a validation batch into displayable images, a captioned grid and wandb's media arguments.

The figures are the kit's (:mod:`visionkit_core.kit.media`, :mod:`visionkit_core.kit.plots`):
headless matplotlib on the Agg canvas, never disturbing a user's interactive session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from visionkit_core.kit.media import name_of, prediction_grid, save_png, to_display
from visionkit_core.kit.plots import media_grid

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "captions",
    "draw_keypoints",
    "media_grid",
    "prediction_grid",
    "save_png",
    "split_batch",
    "to_display",
    "to_uint8",
    "wandb_media",
]


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images, labels)`` from an ``(images, truth, ...)`` sequence (``truth`` a Sample with
    ``label``, or the deprecated bare label tensor) or an ``image``/``label`` dict."""
    import torch

    if isinstance(batch, dict):
        images = next((batch[k] for k in ("image", "images", "input") if k in batch), None)
        labels = next((batch[k] for k in ("label", "labels", "target", "targets") if k in batch), None)
    elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
        images, labels = batch[0], batch[1]
        if isinstance(labels, Mapping):
            labels = labels.get("label")
    else:
        return None
    if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)):
        return None
    if images.ndim != 4 or labels.ndim != 1:
        return None
    return images, labels


def captions(preds: Sequence[int], labels: Sequence[int], class_names: Sequence[str] | None) -> list[str]:
    """``pred: <name> / true: <name>`` per image; an index without a name is shown as the index."""
    return [
        f"pred: {name_of(p, class_names)} / true: {name_of(t, class_names)}"
        for p, t in zip(preds, labels, strict=True)
    ]


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """[0, 1] float images -> a list of uint8 arrays (what wandb.Image takes without guessing)."""
    import numpy as np

    return [np.round(img * 255.0).astype(np.uint8) for img in images]


#: Keypoint colours drawn into wandb images: truth green, prediction red (the grid's colours).
KEYPOINT_COLOURS = {"true_keypoints": (44, 160, 44), "pred_keypoints": (214, 39, 40)}


def draw_keypoints(sample: Any) -> np.ndarray:
    """The sample's ``(H, W, 3)`` uint8 image with its visible keypoints drawn in as dots (wandb has
    no keypoint overlay): truth green, prediction red; the image itself when it has none."""
    import numpy as np

    image = np.ascontiguousarray(sample.image, dtype=np.uint8)
    points = {key: getattr(sample, key, None) for key in KEYPOINT_COLOURS}
    if not any(points.values()):
        return image
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)
    pen = ImageDraw.Draw(picture)
    radius = max(1.0, max(image.shape[:2]) / 100)
    for key, objects in points.items():
        for obj in objects or []:
            for x, y, visible in obj:
                if visible:
                    box = (x - radius, y - radius, x + radius, y + radius)
                    pen.ellipse(box, fill=KEYPOINT_COLOURS[key])
    return np.asarray(picture)


def wandb_media(samples: Sequence[Any], class_names: Sequence[str] | None) -> dict[str, list[Any]]:
    """``log_image`` keyword lists: ``caption`` always, ``masks`` and ``boxes`` where samples have them
    (keypoints are drawn into the images: :func:`draw_keypoints`)."""
    import numpy as np

    labels = {i: name_of(i, class_names) for i in range(len(class_names or []))}
    out: dict[str, list[Any]] = {"caption": [s.caption for s in samples]}
    if any(s.true_mask is not None or s.pred_mask is not None for s in samples):
        out["masks"] = [
            {
                key: {"mask_data": np.asarray(mask, dtype=np.uint8), "class_labels": labels}
                for key, mask in (("ground_truth", s.true_mask), ("prediction", s.pred_mask))
                if mask is not None
            }
            for s in samples
        ]
    if any(s.true_boxes is not None or s.pred_boxes is not None for s in samples):
        out["boxes"] = [_wandb_boxes(s, labels) for s in samples]
    return out


def _wandb_boxes(sample: Any, labels: dict[int, str]) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for key, boxes, classes, scores in (
        ("ground_truth", sample.true_boxes, sample.true_labels, None),
        ("predictions", sample.pred_boxes, sample.pred_labels, sample.pred_scores),
    ):
        if boxes is None:
            continue
        data = []
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            cls = int(classes[i]) if classes is not None and i < len(classes) else 0
            item: dict[str, Any] = {
                "position": {"minX": float(x0), "minY": float(y0), "maxX": float(x1), "maxY": float(y1)},
                "domain": "pixel",
                "class_id": cls,
                "box_caption": labels.get(cls, str(cls)),
            }
            if scores is not None and i < len(scores):
                item["scores"] = {"score": float(scores[i])}
            data.append(item)
        groups[key] = {"box_data": data, "class_labels": labels or {0: "0"}}
    return groups
