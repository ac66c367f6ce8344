"""Datasets of image/mask pairs and of images to predict, with joint torchvision v2 transforms.

An item is ``(image, truth)``: a uint8 ``(3, S, S)`` image and its truth, the contract's
:class:`~visionkit_core.plugin.contract.Sample` ``{"mask": int64 (S, S)}``. Images stay uint8
from the file to the batch (the task normalises on the device). Masks are wrapped in
``tv_tensors.Mask`` so every geometric transform moves them with the image and resizes them with
nearest-neighbour interpolation (no invented class indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionkit_core.kit import data as kit_data
from visionkit_core.kit.data import PredictImages, one_thread
from visionkit_core.kit.recipe import DenseRecipe, RecipeDataset, as_sample
from visionkit_core.kit.recipe import Sample as RecipeSample
from visionkit_core.kit.skips import DECODE_ERRORS
from visionkit_core.plugin.contract import Sample
from visionkit_segmentation.layouts import IGNORE_INDEX, Pair
from visionkit_segmentation.masks import BadPair, check_mask, read_image_pil, read_mask

#: One item: image (3, S, S) uint8, its truth ``{"mask": int64 (S, S)}``, and the (path, reason)
#: of the bad samples it replaced.
Item = tuple[Tensor, Sample, tuple[tuple[str, str], ...]]


def item(image: Tensor, mask: Tensor) -> tuple[Tensor, Sample]:
    """``(image, {"mask": int64})``: what a dataset gives (plain tensors, not tv_tensors)."""
    return image.as_subclass(Tensor), {"mask": mask.as_subclass(Tensor).long()}


def decode_image(path: str) -> Tensor:
    """A ``(3, H, W)`` uint8 RGB tensor (the kit's decoder); raises :class:`BadPair` saying why not."""
    try:
        return kit_data.decode_image(path)
    except DECODE_ERRORS:
        arr = read_image_pil(path)  # says why (BadPair), or reads what the fast path refused
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def train_transform(image_size: int, scale_min: float = 0.5, hflip: bool = True) -> v2.Compose:
    """Joint augmentation: random resized crop (nearest for the mask) and horizontal flip."""
    steps: list[v2.Transform] = [v2.RandomResizedCrop(image_size, scale=(scale_min, 1.0), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def eval_transform(image_size: int) -> v2.Transform:
    """Resize image and mask to ``image_size`` squared (what predict and export feed the model)."""
    return v2.Resize((image_size, image_size), antialias=True)


class SegmentationDataset(RecipeDataset):
    """Pairs decoded on access. A bad pair (unreadable, size mismatch, unknown class values) is
    replaced by the next good one and reported with the sample; ``on_bad_image="error"`` raises.

    ``transform`` (a joint v2 transform of image and mask) makes each sample; with a ``recipe``
    (training) the kit's dense recipe wraps it: a mosaic of four with probability
    ``recipe.mosaic`` (padding ignored: 255), else ``transform``; then HSV jitter and flips.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Any,
        num_classes: int | None,
        on_bad_image: str = "skip",
        *,
        size: int | None = None,
        recipe: DenseRecipe | None = None,
    ) -> None:
        super().__init__(pairs, size or 1, recipe, mask_fill=IGNORE_INDEX, on_bad_image=on_bad_image)
        self.pairs: list[Pair] = self.samples
        self.transform = transform
        self.num_classes = num_classes

    def read(self, pair: Pair) -> tuple[Tensor, Tensor]:
        """The untransformed image ``(3, H, W)`` and mask ``(H, W)``, both uint8; raises :class:`BadPair`."""
        image = decode_image(pair.image)
        mask = read_mask(pair.mask)
        check_mask(pair, mask, (image.shape[1], image.shape[2]), self.num_classes)
        return image, torch.from_numpy(mask)

    def load(self, index: int) -> tuple[Tensor, Sample]:
        if self.recipe is not None:
            return super().load(index)  # type: ignore[return-value]
        sample = self.read_cached(index)
        image, mask = sample["image"].as_subclass(Tensor), sample["mask"].as_subclass(Tensor)
        if self.transform is not None:
            image, mask = self.transform(image, tv_tensors.Mask(mask))
        return item(image, mask)

    def read_sample(self, index: int) -> RecipeSample:
        image, mask = self.read(self.pairs[index])
        return as_sample(image, mask=tv_tensors.Mask(mask))

    def single(self, sample: RecipeSample) -> RecipeSample:
        """Not a mosaic: the dataset's own ``transform`` (a random resized crop)."""
        return self.transform(sample) if self.transform is not None else sample  # type: ignore[no-any-return]

    def finish(self, sample: RecipeSample, index: int) -> tuple[Tensor, Sample]:
        return item(sample["image"], sample["mask"])

    def targets_present(self) -> list[tuple[int, ...]]:
        """Per pair, a multi-hot tuple of the classes its mask holds (``--sampler balanced``)."""
        n = int(self.num_classes or 0)
        result = []
        for pair in self.pairs:
            try:
                values = set(np.unique(read_mask(pair.mask)).tolist())
            except BadPair:
                values = set()
            result.append(tuple(int(c in values) for c in range(n)))
        return result


def collate_pairs(items: Sequence[Item]) -> tuple[Tensor, Sample, list[tuple[str, str]]]:
    """``(images, truth, skipped)``: uint8 ``(N, 3, S, S)`` images, ``{"mask": int64 (N, S, S)}``
    (``default_collate``'s batch), and the ``(path, reason)`` of the bad samples replaced (the
    datamodule records them and hands the task ``(images, truth)``)."""
    with one_thread():
        images, truth = default_collate([it[:2] for it in items])
    return images, truth, [s for it in items for s in it[2]]


def predict_images(files: Sequence[Any], image_size: int) -> PredictImages:
    """Images to predict, resized to ``image_size`` squared (the kit's :class:`PredictImages`)."""
    return PredictImages(files, image_size, eval_transform(int(image_size)), decode=decode_image)
