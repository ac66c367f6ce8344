"""The ``coco`` and ``yolo`` datasets: a LightningDataModule over either layout, read as it is.

Batches are ``(images, targets)``: lists of uint8 ``(3, S, S)`` images and of
``{"boxes": float (n, 4) xyxy pixels, "labels": int64 (n,) class indices, "iscrowd"}``. Images
without objects are negatives (empty targets). Images with an unusable annotation are left
out and counted (``bad_samples()``); unreadable images are replaced by the next good one and
counted; with ``on_bad_image="error"`` every train/val annotation and image is checked in
``setup`` and one UsageError lists the problems before training starts. The training order
and each sample's augmentation come from ``(seed, epoch, index)`` only, so a resumed run sees
exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionkit_core import BadSample, DataInfo, DataSpec, UsageError
from visionkit_core.kit.data import PredictImages
from visionkit_core.kit.recipe import DenseRecipe, RecipeDataModule
from visionkit_detection.check import DetCheckReport, check_tree, problems_of
from visionkit_detection.data import (
    DetectionDataset,
    collate_detection,
    eval_transform,
    predict_images,
)
from visionkit_detection.layouts import DetLayout, Sample, scan, train_val, usable


class DetectionDataModule(RecipeDataModule):
    """Images with boxes in the COCO or YOLO layout.

    Args:
        root: the data folder (``--data``): COCO (``annotations/instances_*.json``) or YOLO
            (``data.yaml``, or the yaml file itself).
        batch_size: images per batch.
        image_size: the side of the square the model sees (longer side resized to it, aspect
            kept, padded); ``None`` uses :attr:`default_image_size`.
        val_split: share of train held out for validation when the data has no val split.
        seed: seeds that split, the training order and the augmentations.
        num_workers: loader processes; ``None``: 0 on CPU (decoding is cheap next to a
            detector's step), up to 4 when a GPU trains.
        on_bad_image: ``"skip"`` (counted, warned) or ``"error"`` (checked up front).
        scale_min, scale_max: the training scale jitter around ``image_size``.
        hflip: random horizontal flips while training.
        mosaic: probability that a training image is a mosaic of four (0: none).
        close_mosaic: no mosaics in the last this-many epochs.
        translate: translation jitter, share of the side each way.
        hsv_h, hsv_s, hsv_v: colour jitter (hue shift; saturation and value factors 1 +- x).
        cache: keep decoded training images in memory: ``auto`` (up to 512 MiB and 10 % of the
            free memory: small data sets entirely), ``ram`` (up to half the free memory) or
            ``none``.
        sampler: training order (``--sampler``): ``default`` (a shuffle) or ``balanced`` (drawn
            with replacement so every class comes up about equally often: an image weighs as
            much as the rarest class it holds).
    """

    default_image_size = 320
    min_image_size = 32
    collate = staticmethod(collate_detection)
    shard_eval = True  # mAP counts each image once
    skip_warning = (
        "skipped {path}: {reason} (replaced by another image); pass --on-bad-image error to stop instead"
    )

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        batch_size: int = 8,
        image_size: int | None = None,
        val_split: float = 0.2,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        scale_min: float = 0.5,
        scale_max: float = 1.5,
        hflip: bool = True,
        sampler: str = "default",
        mosaic: float = 1.0,
        close_mosaic: int = 10,
        translate: float = 0.1,
        hsv_h: float = 0.015,
        hsv_s: float = 0.7,
        hsv_v: float = 0.4,
        cache: str = "auto",
    ) -> None:
        super().__init__()
        self.recipe = DenseRecipe(
            mosaic=mosaic, close_mosaic=close_mosaic, scale_min=scale_min, scale_max=scale_max,
            translate=translate, hsv_h=hsv_h, hsv_s=hsv_s, hsv_v=hsv_v, fliplr=0.5 if hflip else 0.0,
        )  # fmt: skip
        self.configure(locals(), self.recipe.problems())
        self.scale_range = (float(scale_min), float(scale_max))
        self.hflip = hflip
        self._layout: DetLayout | None = None

    # -- declarations --------------------------------------------------------------------
    def layout(self) -> DetLayout:
        if self._layout is None:
            if self.root is None:
                raise UsageError("this dataset needs --data DIR (a COCO or YOLO detection dataset)")
            if not self.root.exists():
                raise UsageError(f"data folder {str(self.root)!r} not found")
            self._layout = scan(self.root)
        return self._layout

    def class_names(self) -> list[str]:
        """From the annotations: COCO's categories (by id), YOLO's ``names``."""
        return list(self.layout().class_names)

    def data_info(self) -> DataInfo:
        """Class names, and the training images after the val split (None: the data has none)."""
        try:
            size: int | None = len(train_val(self.layout(), self.val_split, self.seed)[0])
        except UsageError:  # evaluation data without a training split
            size = None
        return DataInfo(class_names=self.class_names(), train_size=size)

    def data_spec(self) -> DataSpec:
        splits = ["train", "val"] + [s for s in ("test",) if self.layout().splits.get(s)]
        return DataSpec(splits=tuple(splits), batch="tuple", image_key=0)

    def preprocessing(self) -> dict[str, Any]:
        """What predict and export repeat: longer side to ``image_size``, padded right/bottom to a square."""
        return {"image_size": self.image_size, "resize": "letterbox", "pad": "bottom-right", "pad_value": 0}

    def bad_samples(self) -> list[BadSample]:
        """Images left out for their annotations (and orphan annotations), and those skipped loading."""
        listed = (
            [p.skipped() for p in self.layout().problems]
            if self.root is not None and self.root.exists()
            else []
        )
        seen = {(b.path, b.reason) for b in listed}
        return listed + [b for b in super().bad_samples() if (b.path, b.reason) not in seen]

    @classmethod
    def predict_dataset(cls, files: list[Path], preprocessing: dict[str, Any]) -> PredictImages:
        """Files to predict, letterboxed as the checkpoint's training data was."""
        return predict_images(files, int(preprocessing.get("image_size") or cls.default_image_size))

    @classmethod
    def check_data(
        cls, root: Path, workers: int | None = None, progress: Callable[[int], Any] | None = None
    ) -> DetCheckReport:
        """Every problem of ``root`` (``visionkit data check``), decoding every image."""
        return check_tree(Path(root), workers, progress)

    # -- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        layout = self.layout()
        if stage in ("fit", "validate", None):
            train, val = train_val(layout, self.val_split, self.seed)
            if self.on_bad_image == "error" and stage in ("fit", None):
                self._refuse_bad(train + val)
            self.warn_left_out(
                len(layout.bad_images()),
                "unusable annotations (boxes outside the image, zero-area boxes, unknown categories, "
                "malformed lines)",
            )
            if stage in ("fit", None):
                self.datasets["train"] = DetectionDataset(
                    train, None, self.on_bad_image, size=self.image_size, recipe=self.recipe
                )
            self.datasets["val"] = DetectionDataset(val, eval_transform(self.image_size), self.on_bad_image)
        if stage == "test" or (stage is None and layout.splits.get("test")):
            if not layout.splits.get("test"):
                raise UsageError(f"data {str(layout.root)!r} has no test split")
            self.datasets["test"] = DetectionDataset(
                usable(layout, "test"), eval_transform(self.image_size), self.on_bad_image
            )

    def _refuse_bad(self, samples: list[Sample]) -> None:
        layout = self.layout()
        split_files = {s.source for s in samples} | set(layout.files.values())
        relevant = [
            p for p in problems_of(layout, samples) if p.image or p.file in split_files or p.ref is None
        ]
        self.refuse_bad_samples([p.as_bad_sample() for p in relevant])
