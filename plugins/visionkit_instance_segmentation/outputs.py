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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from visionkit_core import MediaSample, Prediction
from visionkit_core.kit import objects
from visionkit_core.kit.instances import BadImage, encode_mask, read_image
from visionkit_core.kit.media import write_png


def write_predictions(
    task: Any, preds: list[Prediction], output: Path | None, threshold: float, options: Mapping[str, Any]
) -> list[str]:
    """The task's ``write_objects`` (:func:`~visionkit_core.kit.objects.write_instances`): ``output``
    (a .json file, or a folder of PNGs), or one summary line per image; ``--overlay`` with a .json
    file writes the instance-id and drawn PNGs next to it."""

    def pngs(kept: list[Prediction], entries: list[dict[str, Any]], folder: Path, suffix: str) -> int:
        # <stem>.png and <stem>_drawn.png per image, whatever the suffix
        folder.mkdir(parents=True, exist_ok=True)
        for p, entry, stem in zip(kept, entries, objects.unique_stems(p.path for p in kept), strict=True):
            write_instance_pngs(p, entry["instances"], folder, stem, threshold)
        return len(kept)

    what = "instance-id and drawn images"
    return objects.write_instances(preds, output, threshold, options, task.class_names, _rle, pngs, what)


def _rle(pred: objects.Objects) -> Any:
    return lambda i: {"rle": encode_mask(pred["masks"][i].numpy())}


def write_instance_pngs(
    pred: Prediction, found: list[dict[str, Any]], folder: Path, stem: str, threshold: float
) -> None:
    """``<stem>.png`` (instance ids, best score first) and ``<stem>_drawn.png`` for one image."""
    value = pred.value
    order = [i for i in value["scores"].argsort(descending=True).tolist() if value["scores"][i] >= threshold]
    masks = value["masks"][order].bool()
    h, w = masks.shape[-2:] if len(order) else (pred.size or (1, 1))
    ids = np.zeros((h, w), dtype=np.uint16 if len(order) > 255 else np.uint8)
    for n in range(len(order) - 1, -1, -1):  # the best instance on top where masks overlap
        ids[masks[n].numpy()] = n + 1
    write_png(folder / f"{stem}.png", ids)
    try:
        image = read_image(pred.path)
    except BadImage:
        return
    captions = [f"{i['label']} {i['score']:.2f}" for i in found]
    labels = [int(value["labels"][i]) for i in order]
    drawn = (
        objects.draw_objects(image, [i["box"] for i in found], captions, labels, masks) if found else image
    )
    write_png(folder / f"{stem}_drawn.png", drawn.permute(1, 2, 0).numpy())


def media_samples(
    task: Any, images: Sequence[Tensor], targets: Sequence[objects.Objects], preds: Sequence[objects.Objects]
) -> list[MediaSample]:
    """The task's ``draw_samples``: each image with its predicted masks drawn (score >=
    ``task.show_threshold``), true and predicted boxes alongside."""
    result = []
    for image, target, pred in zip(images, targets, preds, strict=True):
        keep = pred["scores"].detach().cpu() >= task.show_threshold
        labels = [int(v) for v in pred["labels"].detach().cpu()[keep].tolist()]
        masks = pred["masks"].detach().cpu()[keep][:, 0] > 0.5 if "masks" in pred else None
        picture = objects.draw_objects(objects.to_uint8(image), [], [], labels, masks)
        result.append(
            objects.media_sample(picture, target, pred, keep, int(keep.sum()) == len(target["labels"]))
        )
    return result
