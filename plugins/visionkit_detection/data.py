"""Datasets of images with boxes and of images to predict, with joint torchvision v2 transforms.

Images stay uint8 from the file to the batch (the task scales them on the device). Boxes are
``tv_tensors.BoundingBoxes`` (XYXY, pixels), so every geometric transform moves them with the
image; after the transforms they are clipped to the image and boxes left degenerate (under a
pixel wide or tall) are dropped with their labels. Every image becomes an ``S x S`` square:
its longer side resized to ``S`` (aspect kept), padded with black at the right and bottom;
training adds a horizontal flip, scale jitter and a random crop/pad. Batches are lists
(``(images, targets)``), as torchvision's detectors take them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionkit_core.kit import data as kit_data
from visionkit_core.kit.data import PredictImages
from visionkit_core.kit.recipe import DenseRecipe, RecipeDataset, as_sample
from visionkit_core.kit.recipe import Sample as RecipeSample
from visionkit_core.kit.skips import DECODE_ERRORS, UnusableSample, error_text
from visionkit_detection.check import inspect_image
from visionkit_detection.layouts import PIXEL_TOLERANCE, Sample, outside

#: One sample: image (3, S, S) uint8, target {"boxes", "labels", "iscrowd", "image_id"}, the bad
#: samples it replaced.
Item = tuple[Tensor, dict[str, Tensor], tuple[tuple[str, str], ...]]


class BadImage(UnusableSample):
    """A sample that cannot be used: ``path`` is the image, ``reason`` says why."""


def decode_image(path: str) -> Tensor:
    """A ``(3, H, W)`` uint8 RGB tensor (the kit's decoder); raises :class:`BadImage` saying why not."""
    try:
        return kit_data.decode_image(path)
    except DECODE_ERRORS as err:
        raise BadImage(path, inspect_image(path, None) or f"cannot read image: {error_text(err)}") from None


def letterbox_scale(size: tuple[int, int], image_size: int) -> float:
    """The factor that makes the longer side of an ``(h, w)`` image ``image_size``."""
    return image_size / max(size)


def letterbox(image: Tensor, image_size: int) -> Tensor:
    """Resize the longer side to ``image_size`` (aspect kept) and pad right/bottom to a square."""
    h, w = image.shape[-2:]
    scale = letterbox_scale((h, w), image_size)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        image = v2.functional.resize(image, [nh, nw], antialias=True)
    return F.pad(image, (0, image_size - nw, 0, image_size - nh))


class Letterbox(v2.Transform):
    """:func:`letterbox` for an image with its boxes (boxes scale with the image; padding moves none)."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = int(image_size)

    def forward(self, image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:  # type: ignore[override]
        h, w = image.shape[-2:]
        scale = letterbox_scale((h, w), self.image_size)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        image, boxes = v2.functional.resize(image, [nh, nw], antialias=True), target["boxes"]
        if (nh, nw) != (h, w):
            boxes = v2.functional.resize(boxes, [nh, nw])
        s = self.image_size
        image = F.pad(image, (0, s - nw, 0, s - nh))
        boxes = tv_tensors.wrap(boxes, like=boxes, canvas_size=(s, s))
        return image, {**target, "boxes": boxes}


def _labels(inputs: Any) -> tuple[Tensor, Tensor]:
    return inputs[1]["labels"], inputs[1]["iscrowd"]


def train_transform(
    image_size: int, scale_range: tuple[float, float] = (0.75, 1.25), hflip: bool = True
) -> Any:
    """Flip, scale jitter, random crop/pad to the ``image_size`` square; clip, drop degenerate boxes."""
    s = int(image_size)
    steps: list[Any] = [v2.RandomHorizontalFlip()] if hflip else []
    steps += [
        v2.ScaleJitter((s, s), scale_range=scale_range, antialias=True),
        v2.RandomCrop((s, s), pad_if_needed=True, fill=0),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels),
    ]
    return v2.Compose(steps)


def eval_transform(image_size: int) -> Any:
    """Letterbox to ``image_size`` (what predict and export do), then clip and drop degenerate boxes."""
    return v2.Compose(
        [Letterbox(image_size), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=_labels)]
    )


def pixel_boxes(sample: Sample, height: int, width: int) -> np.ndarray:
    """The sample's boxes in pixels of the decoded image, clipped to it; raises :class:`BadImage`."""
    if sample.size is not None and sample.size != (height, width):
        raise BadImage(
            sample.image,
            f"image is {width}x{height} but its annotations declare {sample.size[1]}x{sample.size[0]}",
        )
    boxes = np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)
    if sample.normalised:
        boxes = boxes * np.array([width, height, width, height], dtype=np.float64)
    elif sample.size is None:  # COCO without width/height: only now can boxes be checked against it
        refs = sample.refs or list(range(len(boxes)))
        for box, ref in zip(boxes.tolist(), refs, strict=True):
            why = outside(box, width, height, PIXEL_TOLERANCE)
            if why:
                raise BadImage(sample.image, f"annotation {ref} in {sample.source}: box {why} the image")
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes.astype(np.float32)


class DetectionDataset(RecipeDataset):
    """Samples decoded on access. An unreadable image (or one whose size contradicts its annotations)
    is replaced by the next good one and reported with the sample; ``on_bad_image="error"`` raises.

    With a ``recipe`` (training) the kit's dense recipe builds each sample (mosaic of four,
    scale/translate jitter, HSV jitter, flip) at ``size``; without one, ``transform`` (a v2
    transform of ``(image, target)``, e.g. :func:`eval_transform`) does.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Any = None,
        on_bad_image: str = "skip",
        *,
        size: int | None = None,
        recipe: DenseRecipe | None = None,
    ) -> None:
        if recipe is not None and size is None:
            raise ValueError("a recipe needs the training image size")
        super().__init__(samples, size or 1, recipe, on_bad_image=on_bad_image)
        self.transform = transform

    @property
    def targets(self) -> list[tuple[int, ...]]:
        """Per image, a multi-hot tuple of the classes it holds (``--sampler balanced``)."""
        n = 1 + max((c for s in self.samples for c in s.labels), default=-1)
        return [tuple(int(c in set(s.labels)) for c in range(n)) for s in self.samples]

    def read(self, sample: Sample) -> tuple[Tensor, dict[str, Tensor]]:
        """The untransformed image and its target (boxes in pixels); raises :class:`BadImage`."""
        image = decode_image(sample.image)
        h, w = int(image.shape[1]), int(image.shape[2])
        boxes = pixel_boxes(sample, h, w)
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor(sample.labels, dtype=torch.int64),
            "iscrowd": torch.tensor(sample.crowd, dtype=torch.int64).reshape(-1),
        }
        return image, target

    def read_sample(self, index: int) -> RecipeSample:
        """The untransformed sample as the kit's recipe takes it (image, boxes, labels, iscrowd)."""
        image, target = self.read(self.samples[index])
        return as_sample(image, **target)

    def finish(self, sample: RecipeSample, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image = sample["image"].as_subclass(Tensor)
        return image, self._target({k: v for k, v in sample.items() if k != "image"}, index)

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if self.recipe is not None:
            return super().load(index)  # type: ignore[return-value]
        image, target = self.read(self.samples[index])
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, self._target(target, index)

    @staticmethod
    def _target(target: dict[str, Any], index: int) -> dict[str, Tensor]:
        target = {k: v.as_subclass(Tensor) for k, v in target.items()}
        target["boxes"] = target["boxes"].float().reshape(-1, 4)
        target["image_id"] = torch.tensor(index)  # which sample it is: the metric counts each once
        return target


def collate_detection(items: Sequence[Item]) -> tuple[list[Tensor], list[dict[str, Tensor]], list[Any]]:
    """``(images, targets, skipped)``: lists, one entry per image (sizes may differ)."""
    return [it[0] for it in items], [it[1] for it in items], [s for it in items for s in it[2]]


def predict_images(files: Sequence[Any], image_size: int) -> PredictImages:
    """Images to predict, letterboxed to ``image_size`` (a list per batch: detectors take lists)."""
    size = int(image_size)
    return PredictImages(files, size, functools.partial(letterbox, image_size=size), False, decode_image)
