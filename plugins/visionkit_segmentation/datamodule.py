"""The ``segmasks`` dataset: a LightningDataModule over the masks layout or Pascal VOC.

Batches are ``(images, truth)``: uint8 ``(N, 3, S, S)`` images and the batched
:class:`~visionkit_core.plugin.contract.Sample` ``{"mask": int64 (N, S, S)}``; 255 in a mask is
ignored by the loss and the metrics. Bad samples (no mask, unreadable, size mismatch, values
that are not classes) are skipped and counted (``bad_samples()``), or, with
``on_bad_image="error"``, every train/val pair is checked in ``setup`` and one UsageError lists
them before training starts. The training order and each sample's augmentation come from
``(seed, epoch, index)`` only, so a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit_core import BadSample, DataInfo, DataSpec, UsageError
from visionkit_core.kit.data import PredictImages
from visionkit_core.kit.recipe import DenseRecipe, RecipeDataModule
from visionkit_segmentation.check import SegCheckReport, check_tree
from visionkit_segmentation.data import (
    SegmentationDataset,
    collate_pairs,
    eval_transform,
    predict_images,
    train_transform,
)
from visionkit_segmentation.layouts import IGNORE_INDEX, Pair, SegLayout, scan, train_val
from visionkit_segmentation.masks import BadPair, inspect_pair, read_mask


class SegmentationDataModule(RecipeDataModule):
    """Image/mask pairs for semantic segmentation.

    Args:
        root: the data folder (``--data``): masks layout or Pascal VOC.
        batch_size: samples per batch.
        image_size: side of the square the model sees; ``None`` uses :attr:`default_image_size`.
        val_split: share of train held out for validation when the folder has no val split.
        seed: seeds that split, the training order and the augmentations.
        num_workers: loader processes; ``None``: 0 (decoding small masks is cheaper than workers
            on a CPU that is busy training) unless a GPU trains, then up to 4.
        on_bad_image: ``"skip"`` (counted, warned once each) or ``"error"`` (checked up front).
        scale_min: smallest area share of the training random resized crop.
        hflip: random horizontal flips while training.
        sampler: training order (``--sampler``): ``default`` (a shuffle) or ``balanced`` (drawn
            with replacement so every class comes up about equally often: a sample weighs as
            much as the rarest class its mask holds).
        mosaic: probability that a training sample is a mosaic of four (the kit's dense
            recipe; default 0: off), its padding ignored by the loss.
        close_mosaic: no mosaics in the last this-many epochs.
        hsv_h, hsv_s, hsv_v: colour jitter (hue shift; saturation and value factors 1 +- x;
            default 0: off).
        cache: keep decoded training pairs in memory: ``auto`` (up to 512 MiB and 10 % of the
            free memory: small data sets entirely), ``ram`` (up to half the free memory) or
            ``none``.
    """

    default_image_size = 256
    min_image_size = 8
    collate = staticmethod(collate_pairs)

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        batch_size: int = 16,
        image_size: int | None = None,
        val_split: float = 0.2,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        scale_min: float = 0.5,
        hflip: bool = True,
        sampler: str = "default",
        mosaic: float = 0.0,
        close_mosaic: int = 10,
        hsv_h: float = 0.0,
        hsv_s: float = 0.0,
        hsv_v: float = 0.0,
        cache: str = "auto",
    ) -> None:
        super().__init__()
        bad_scale = f"data.scale_min must be in (0, 1], got {scale_min}"
        recipe = DenseRecipe(
            mosaic=mosaic, close_mosaic=close_mosaic, hsv_h=hsv_h, hsv_s=hsv_s, hsv_v=hsv_v,
            fliplr=0.5 if hflip else 0.0,
        )  # fmt: skip
        problems = [] if 0.0 < scale_min <= 1.0 else [bad_scale]
        self.configure(locals(), problems + recipe.problems())
        self.scale_min, self.hflip = scale_min, hflip
        # the kit's recipe only when one of its parts is on: otherwise the samples are exactly
        # the random resized crop and flip of before
        self.recipe = recipe if (mosaic or hsv_h or hsv_s or hsv_v) else None
        self._layout: SegLayout | None = None
        self._class_names: list[str] | None = None

    # -- declarations --------------------------------------------------------------------
    def layout(self) -> SegLayout:
        if self._layout is None:
            if self.root is None:
                raise UsageError("the segmasks dataset needs --data DIR (a masks or Pascal VOC folder)")
            if not self.root.is_dir():
                raise UsageError(f"data folder {str(self.root)!r} not found")
            self._layout = scan(self.root)
        return self._layout

    def class_names(self) -> list[str]:
        """From ``classes.txt`` (or VOC's 21), else ``class_0``.. up to the largest mask value."""
        if self._class_names is None:
            layout = self.layout()
            self._class_names = layout.class_names or _names_from_masks(layout)
        return list(self._class_names)

    def data_info(self) -> DataInfo:
        """Class names, the ignore index, and the training pairs after the val split (None: none)."""
        try:
            size: int | None = len(train_val(self.layout(), self.val_split, self.seed)[0])
        except UsageError:  # evaluation data without a training split
            size = None
        return DataInfo(class_names=self.class_names(), ignore_index=IGNORE_INDEX, train_size=size)

    def data_spec(self) -> DataSpec:
        splits = ["train", "val"] + [s for s in ("test",) if self.layout().splits.get(s)]
        return DataSpec(splits=tuple(splits), batch="tuple", image_key=0)

    def preprocessing(self) -> dict[str, Any]:
        """What predict and export need: images are resized to a square of ``image_size``."""
        return {"image_size": self.image_size, "resize": "square", "interpolation": "bilinear"}

    def bad_samples(self) -> list[BadSample]:
        """Samples without a mask (found when listing) and those skipped while loading."""
        listed = list(self.layout().bad) if (self.root is not None and self.root.is_dir()) else []
        return listed + super().bad_samples()

    def sample_targets(self, dataset: Any) -> Sequence[Any]:
        """Per training pair, the classes its mask holds (multi-hot), for ``--sampler balanced``."""
        return dataset.targets_present()  # type: ignore[no-any-return]

    @classmethod
    def predict_dataset(cls, files: list[Path], preprocessing: dict[str, Any]) -> PredictImages:
        """Files to predict, resized as the checkpoint's training data was."""
        return predict_images(files, int(preprocessing.get("image_size") or cls.default_image_size))

    @classmethod
    def check_data(
        cls, root: Path, workers: int | None = None, progress: Callable[[int], Any] | None = None
    ) -> SegCheckReport:
        """Every problem of ``root`` (``visionkit data check``), decoding every image and mask."""
        return check_tree(Path(root), workers, progress)

    # -- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        layout, n = self.layout(), len(self.class_names())
        if stage in ("fit", "validate", None):
            train, val = train_val(layout, self.val_split, self.seed)
            if self.on_bad_image == "error" and stage in ("fit", None):
                self._refuse_bad(train + val)
            if stage in ("fit", None):
                # with the recipe the flip is the recipe's (after a mosaic too)
                tf = train_transform(self.image_size, self.scale_min, self.hflip and self.recipe is None)
                self.datasets["train"] = SegmentationDataset(
                    train, tf, n, self.on_bad_image, size=self.image_size, recipe=self.recipe
                )
            self.datasets["val"] = SegmentationDataset(val, self._eval(), n, self.on_bad_image)
        if stage == "test" or (stage is None and layout.splits.get("test")):
            if not layout.splits.get("test"):
                raise UsageError(f"data folder {str(layout.root)!r} has no test split; add test/images/")
            self.datasets["test"] = SegmentationDataset(
                layout.splits["test"], self._eval(), n, self.on_bad_image
            )

    def _eval(self) -> Any:
        return eval_transform(self.image_size)

    def _refuse_bad(self, pairs: list[Pair]) -> None:
        n = len(self.class_names())
        bad = [BadSample(b.path, b.reason) for b in self.layout().bad]
        bad += [BadSample(str(r.path), str(r.reason)) for r in map(_inspect, pairs, [n] * len(pairs)) if r]
        self.refuse_bad_samples(bad)


def _inspect(pair: Pair, num_classes: int) -> BadPair | None:
    result = inspect_pair(pair, num_classes)
    return BadPair(str(result.path), str(result.reason)) if result.reason else None


def _names_from_masks(layout: SegLayout) -> list[str]:
    """``class_0``.. ``class_<max>``: the largest class value in any readable mask (255 ignored)."""
    top = 0
    for pairs in layout.splits.values():
        for pair in pairs:
            try:
                values = np.unique(read_mask(pair.mask))
            except BadPair:
                continue  # reported when the sample is loaded
            values = values[values != IGNORE_INDEX]
            if values.size:
                top = max(top, int(values.max()))
    return [f"class_{i}" for i in range(top + 1)]
