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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from visionkit_core import MediaSample, Prediction
from visionkit_core.kit import objects
from visionkit_core.kit.keypoints import draw_skeleton

TRUE_COLOUR = [(60, 220, 75)]
PRED_COLOUR = [(240, 40, 60)]


def _keypoints(pred: objects.Objects) -> Any:
    """``extra`` of :func:`objects.objects_json`: object ``i``'s keypoints ``[[x, y, score], ...]``."""

    def extra(i: int) -> dict[str, Any]:
        xy = pred["keypoints"][i][:, :2].tolist()
        scores = pred["keypoints_scores"][i].tolist() if "keypoints_scores" in pred else [1.0] * len(xy)
        return {
            "keypoints": [
                [round(x, 3), round(y, 3), round(s, 4)] for (x, y), s in zip(xy, scores, strict=True)
            ]
        }

    return extra


def write_predictions(
    task: Any, preds: list[Prediction], output: Path | None, threshold: float, options: Mapping[str, Any]
) -> list[str]:
    """The task's ``write_objects`` (:func:`~visionkit_core.kit.objects.write_instances`): ``output``
    (a .json file, or a folder), or one summary line per image; ``--overlay`` draws the skeletons
    next to the .json file."""
    draw_all = _drawer(task.skeleton)

    def drawn(kept: list[Prediction], entries: list[dict[str, Any]], folder: Path, suffix: str) -> int:
        return objects.write_drawn(entries, folder, draw_all, suffix)

    names = task.class_names
    return objects.write_instances(
        preds, output, threshold, options, names, _keypoints, drawn, "drawn skeletons"
    )


def _drawer(skeleton: Sequence[Sequence[int]]) -> Any:
    return lambda image, entry: draw(image, entry["instances"], skeleton)


def draw(image: Tensor, instances: list[dict[str, Any]], skeleton: Sequence[Sequence[int]]) -> Tensor:
    """``image`` (uint8 CHW) with the JSON instances' boxes, labels and skeletons drawn."""
    if not instances:
        return image
    captions = [f"{i['label']} {i['score']:.2f}" for i in instances]
    image = objects.draw_objects(
        image, [i["box"] for i in instances], captions, [0] * len(instances), colour="white"
    )
    keypoints = torch.tensor([i["keypoints"] for i in instances], dtype=torch.float32)
    return draw_skeleton(image, keypoints, skeleton)


def media_samples(
    task: Any, images: Sequence[Tensor], targets: Sequence[objects.Objects], preds: Sequence[objects.Objects]
) -> list[MediaSample]:
    """The task's ``draw_samples``: each image with true skeletons (green) and predicted ones (red,
    score >= ``task.show_threshold``) drawn in, true and predicted boxes alongside."""
    skeleton = task.skeleton
    result = []
    for image, target, pred in zip(images, targets, preds, strict=True):
        keep = pred["scores"].detach().cpu() >= task.show_threshold
        truth = target["keypoints"].detach().cpu().float()
        shown = draw_skeleton(
            objects.to_uint8(image), truth, skeleton, target["visibility"].cpu() > 0, TRUE_COLOUR
        )
        predicted = pred["keypoints"].detach().cpu().float()[keep]
        shown = draw_skeleton(shown, predicted, skeleton, colours=PRED_COLOUR)
        result.append(objects.media_sample(shown, target, pred, keep))
    return result
