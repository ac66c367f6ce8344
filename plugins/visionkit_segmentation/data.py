"""Datasets of image/mask pairs and of images to predict, with joint torchvision v2 transforms.

Images stay uint8 from the file to the batch (the task normalises on the device). Masks
are wrapped in ``tv_tensors.Mask`` so every geometric transform moves them with the image
and resizes them with nearest-neighbour interpolation (no invented class indices).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionkit_core import UsageError
from visionkit_segmentation.layouts import Pair
from visionkit_segmentation.masks import BadPair, check_mask, read_image_pil, read_mask

try:  # deprecated in torchvision 0.29 in favour of TorchCodec; Pillow takes over if it goes away
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
except ImportError:  # pragma: no cover - depends on the installed torchvision
    decode_jpeg = None

#: One sample: image (3, S, S) uint8, mask (S, S) uint8, and the (path, reason) of bad samples it replaced.
Item = tuple[Tensor, Tensor, tuple[tuple[str, str], ...]]


def decode_image(path: str) -> Tensor:
    """A ``(3, H, W)`` uint8 RGB tensor; JPEGs through torchvision.io (faster), the rest through Pillow.

    PNGs never go to torchvision: its PNG decoder crashes the process on some truncated files.
    Raises :class:`BadPair` for a file that cannot be read.
    """
    if decode_jpeg is not None and path.lower().endswith((".jpg", ".jpeg")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(read_file(path), mode=ImageReadMode.RGB)  # type: ignore[no-any-return]
        except RuntimeError:
            pass  # libjpeg rejects it; Pillow may read it, or say why not
    arr = read_image_pil(path)
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


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Per-image work on one torch thread in the main process (threads fight on busy, small CPUs)."""
    threads = torch.get_num_threads()
    if threads == 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SegmentationDataset(Dataset[Item]):
    """Pairs decoded on access. A bad pair (unreadable, size mismatch, unknown class values) is
    replaced by the next good one and reported with the sample; ``on_bad_image="error"`` raises."""

    def __init__(
        self, pairs: Sequence[Pair], transform: Any, num_classes: int | None, on_bad_image: str = "skip"
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.num_classes = num_classes
        self.on_bad_image = on_bad_image
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        """``dataset[i]``, or ``dataset[(i, seed)]`` to draw the random transform from ``seed``."""
        if isinstance(key, tuple):
            index, seed = key
            gen = torch.default_generator  # what v2 transforms draw from; restored afterwards
            state = gen.get_state()
            gen.manual_seed(seed)
            try:
                return self._get(index)
            finally:
                gen.set_state(state)
        return self._get(key)

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[Item]:
        with one_thread():
            return [self[key] for key in keys]

    def load(self, pair: Pair) -> tuple[Tensor, Tensor]:
        """The untransformed image ``(3, H, W)`` and mask ``(H, W)``, both uint8; raises :class:`BadPair`."""
        image = decode_image(pair.image)
        mask = read_mask(pair.mask)
        check_mask(pair, mask, (image.shape[1], image.shape[2]), self.num_classes)
        return image, torch.from_numpy(mask)

    def _get(self, index: int) -> Item:
        skipped: list[tuple[str, str]] = []
        n = len(self.pairs)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                image, mask = self.load(self.pairs[i])
            except BadPair as bad:
                if self.on_bad_image == "error":
                    raise UsageError(f"{bad.path}: {bad.reason} (--on-bad-image error)") from None
                self._bad.add(i)
                skipped.append((bad.path, bad.reason))
                continue
            if self.transform is not None:
                image, mask = self.transform(image, tv_tensors.Mask(mask))
            return image, mask.as_subclass(Tensor), tuple(skipped)
        raise UsageError(f"none of the {n} samples can be used, e.g. {skipped[0][0]}: {skipped[0][1]}")


def collate_pairs(items: Sequence[Item]) -> dict[str, Any]:
    """``{"image": uint8 (N, 3, S, S), "mask": int64 (N, S, S), "skipped": [(path, reason), ...]}``."""
    with one_thread():
        images = torch.stack([item[0] for item in items])
        masks = torch.stack([item[1] for item in items]).long()
    return {"image": images, "mask": masks, "skipped": [s for item in items for s in item[2]]}


class PredictImages(Dataset[dict[str, Any]]):
    """Images to predict: ``{"image": uint8 (3, S, S), "ok", "size": (h, w), "path"}`` per file.

    An unreadable file gives ``ok=False`` and a blank image, so one bad file never stops a run.
    """

    def __init__(self, files: Sequence[Any], image_size: int) -> None:
        self.files = [str(f) for f in files]
        self.resize = eval_transform(int(image_size))
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        try:
            image = decode_image(path)
        except BadPair:
            s = self.image_size
            return {
                "image": torch.zeros(3, s, s, dtype=torch.uint8),
                "ok": False,
                "size": (s, s),
                "path": path,
            }
        size = (int(image.shape[1]), int(image.shape[2]))
        return {"image": self.resize(image), "ok": True, "size": size, "path": path}

    @staticmethod
    def collate_fn(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack the images; keep sizes as a list of ``(h, w)`` tuples and paths as strings."""
        return {
            "image": torch.stack([it["image"] for it in items]),
            "ok": torch.tensor([bool(it["ok"]) for it in items]),
            "size": [tuple(it["size"]) for it in items],
            "path": [it["path"] for it in items],
        }
