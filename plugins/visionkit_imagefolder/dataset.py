"""Transform and collate image files: the ImageFolder data path, on the kit's data base.

Everything stays uint8 from the file to the batch; the model normalises on the device.
Files are decoded by the kit (:func:`visionkit_core.kit.data.decode_image`: torchvision.io
for JPEGs, Pillow for the rest); :class:`ImageFileDataset` is a kit ``SeededDataset``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from visionkit_core import UsageError
from visionkit_core.kit.data import SeededDataset, one_thread
from visionkit_core.kit.data import decode_image as decode_image_file
from visionkit_core.kit.data import decode_image_bytes as decode_image_bytes
from visionkit_core.kit.skips import DECODE_ERRORS, UnusableSample, error_text
from visionkit_core.plugin.contract import Sample
from visionkit_imagefolder.folders import LabelledFile

#: One sample: the image, its truth (:func:`truth_of`: ``{"label": ()}`` or ``{"multi_hot": (C,)}``),
#: and the paths of unreadable files replaced by it.
Item = tuple[Tensor, Sample, tuple[str, ...]]
#: One batch from the loaders: images (B, 3, S, S) uint8, truth ``{"label": (B,) int64}`` or
#: ``{"multi_hot": (B, C) float32}``, unreadable paths met.
RawBatch = tuple[Tensor, Sample, list[str]]


def truth_of(label: int | tuple[int, ...]) -> Sample:
    """A label as the contract's Sample: a class index -> ``{"label": int64 ()}``, a multi-hot
    tuple (multi-label data) -> ``{"multi_hot": float32 (C,)}``."""
    if isinstance(label, tuple):
        return {"multi_hot": torch.tensor(label, dtype=torch.float32)}
    return {"label": torch.tensor(label, dtype=torch.int64)}


class BadImageError(UsageError):
    """An image file could not be decoded and ``on_bad_image`` is ``"error"``."""

    def __init__(self, message: str) -> None:
        # A DataLoader worker's exception is re-raised in the main process as
        # ``BadImageError(<whole worker traceback>)``; keep only the original message.
        if message.startswith("Caught BadImageError"):
            original = message.rstrip().splitlines()[-1].partition("BadImageError: ")[2]
            message = original or message
        super().__init__(message)


#: ``--augment`` choices; every one but ``none`` starts with the ``basic`` crop and flip.
AUGMENTATIONS = ("none", "basic", "randaugment", "trivialaugment", "autoaugment")


def train_transform(
    image_size: int,
    crop_scale_min: float = 0.35,
    hflip: bool = True,
    augment: str = "basic",
    crop_pct: float = 0.875,
) -> v2.Compose:
    """Training augmentation on uint8 tensors.

    ``none``: the evaluation resize + centre crop; ``basic``: random resized crop (+ horizontal
    flip); ``randaugment`` / ``trivialaugment`` / ``autoaugment``: basic, then torchvision's
    policy of that name (``AutoAugment`` with its ImageNet policy), on uint8 as they expect.
    """
    if augment not in AUGMENTATIONS:
        raise UsageError(f"augment {augment!r} is not one of: {', '.join(AUGMENTATIONS)}")
    if augment == "none":
        return eval_transform(image_size, crop_pct)
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), antialias=True)
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment == "randaugment":
        steps.append(v2.RandAugment())
    elif augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif augment == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    return v2.Compose(steps)


def eval_transform(image_size: int, crop_pct: float = 0.875) -> v2.Compose:
    """Deterministic evaluation transform: resize the short side to size/crop_pct, centre crop."""
    return v2.Compose([v2.Resize(round(image_size / crop_pct), antialias=True), v2.CenterCrop(image_size)])


class ImageFileDataset(SeededDataset):
    """``(path, label)`` samples decoded on access as ``(image, truth)``; unreadable files are skipped
    or raised.

    With ``on_bad_image="skip"`` an unreadable file is replaced by the next readable sample
    (index + 1, + 2, ... wrapping around), so every batch keeps its size and an all-bad
    batch cannot happen; the replaced paths travel with the sample so the main process can
    warn about each once. With ``"error"`` the first unreadable file raises a UsageError.
    """

    def __init__(
        self,
        samples: Sequence[LabelledFile],
        transform: v2.Transform | None = None,
        on_bad_image: str = "skip",
    ) -> None:
        super().__init__(samples, on_bad_image)
        self.targets = [label for _, label in self.samples]
        self.transform = transform

    def load(self, index: int) -> tuple[Tensor, Sample]:
        path, label = self.samples[index]
        try:
            img = decode_image_file(path)
        except DECODE_ERRORS as err:
            raise UnusableSample(path, error_text(err)) from None
        return (self.transform(img) if self.transform is not None else img), truth_of(label)

    def skip_entry(self, bad: UnusableSample) -> str:
        return bad.path  # the datamodule records it as an unreadable image

    def refuse(self, bad: UnusableSample) -> Exception:
        return BadImageError(
            f"cannot read image {bad.path!r}: {bad.reason}; fix or remove the file, "
            "or pass --on-bad-image skip"
        )

    def none_usable(self, example: UnusableSample) -> Exception:
        return BadImageError(f"none of the {len(self)} images could be read, e.g. {self.samples[0][0]!r}")


def collate_samples(items: Sequence[Item]) -> RawBatch:
    """Stack uint8 images and each truth field (what ``default_collate`` makes of them); gather
    the unreadable paths the samples replaced."""
    with one_thread():
        images = torch.stack([item[0] for item in items])
        truth = {key: torch.stack([item[1][key] for item in items]) for key in items[0][1]}  # type: ignore[literal-required]
    skipped = [p for item in items for p in item[2]]
    return images, truth, skipped  # type: ignore[return-value]


class PredictFiles(Dataset[dict[str, Any]]):
    """Image files for ``predict`` as ``{"image", "ok", "size"}`` samples.

    An unreadable file gives a blank image with ``ok=False``: predict names it and goes on.
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], image_size: int, crop_pct: float) -> None:
        self.files = list(files)
        self.transform = eval_transform(image_size, crop_pct)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = decode_image_file(self.files[index])
        except Exception:
            blank = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
            return {"image": blank, "ok": False, "size": torch.tensor([0, 0])}
        size = torch.tensor([int(image.shape[-2]), int(image.shape[-1])])
        return {"image": self.transform(image), "ok": True, "size": size}
